/**
 * Re-protection (issue 14): what `colo protect` costs a survivor, with the
 * dead host's old image as the new secondary's disk, against the hash
 * compare and a full resync (the new secondary's image blank), same run,
 * same guest and data.
 *
 *   npm run build && node dist/bench/reprotect.js [--disk-mib 256] [--keys 2000]
 *
 * A pair in COLO compare mode with an arbiter and a replicated AOF disk;
 * the client writes --keys keys; the primary host is SIGKILLed, the
 * secondary takes over. Then, twice: a new secondary waits on h1, the
 * INCR client runs on one connection across `colo protect` on h2, and the
 * figures are read -- the start's checkpoint-0 pause, memory sent, disk
 * chunks and MiB copied and the time it took, the whole start, and the
 * longest INCR reply during it (what a client saw). First with h1's old
 * image (what it held when its host died): the activity logs of both
 * images name the chunks to copy (docs/operations.md "Re-protection").
 * Then, after the session is ended in order, the same image again with
 * `--full-disk-sync` (both sides hash every chunk); then that image zeroed
 * and its log deleted (a full resync: an image changed outside colo must
 * lose its log, or the logs would name too few chunks). Writes
 * bench/results/reprotect-<timestamp>.json. Not a test. Needs root and
 * the guest image.
 */
import { copyFileSync, mkdtempSync, rmSync, statSync, truncateSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createDataDisk } from "../guest/mkdisk.js";
import { removeLog } from "../src/colo/disk/activity-log.js";
import { generateKeyFile } from "../src/channel/key.js";
import { labDown, labTopology, labUp } from "../src/lab/lab.js";
import { writeGuestConfig } from "../test/tools/guest-fixture.js";
import { stopDaemonsUnder } from "../test/tools/interrupt.js";
import { Pair, waitFor } from "../test/tools/pair-fixture.js";
import { positiveIntArg } from "./args.js";
import { writeResult } from "./results.js";

const LAB = labTopology("cbrep");

interface Case {
  image: "old, activity logs" | "old, hash compare" | "blank";
  startMs: number;
  pauseMs: number;
  memoryMiB: number;
  diskChunksCopied: number;
  diskMiBCopied: number;
  diskMs: number;
  /** The longest INCR reply while `colo protect` ran (the client's view of the pause). */
  clientMaxReplyMs: number;
  incrGaps: number;
  connectionResets: number;
}

const START = /start (\d+) ms; checkpoint 0 paused the guest (\d+) ms \((\d+) pages, ([\d.]+) MiB\); disks: (\d+) chunks \(([\d.]+) MiB\) copied, the ones that differed, in (\d+) ms/;

async function reprotect(pair: Pair, image: Case["image"], cfg: string, extra: string[] = []): Promise<Case> {
  await pair.listenSecondary("h1");
  const incr = pair.startIncr(600);
  await waitFor("INCRs flow", async () => Number((await pair.redis("GET", "colo:incr").catch(() => "0")) || "0") > 0, 60_000);
  const r = await pair.colo(pair.h2, ["protect", pair.name, LAB.replIps[0], "--key-file", pair.keyFile, "-C", cfg, ...extra, ...pair.arbiterArgs()]);
  const s = await incr.result();
  if (r.code !== 0) throw new Error(`colo protect (${image} image): ${r.stderr}`);
  const m = START.exec(r.stdout);
  if (!m) throw new Error(`colo protect printed no start figures: ${r.stdout}`);
  const n = (i: number) => Number(m[i]);
  return {
    image,
    startMs: n(1),
    pauseMs: n(2),
    memoryMiB: n(4),
    diskChunksCopied: n(5),
    diskMiBCopied: n(6),
    diskMs: n(7),
    clientMaxReplyMs: s.maxReplyMs,
    incrGaps: s.gaps,
    connectionResets: s.connectionResets,
  };
}

async function main(): Promise<void> {
  const diskMiB = positiveIntArg("--disk-mib", 256);
  const keys = positiveIntArg("--keys", 2000);
  const work = mkdtempSync(join(tmpdir(), "colo-brep-"));
  const key = join(work, "colo.key");
  generateKeyFile(key);
  const pImg = join(work, "p.img");
  const sImg = join(work, "s.img");
  const pair = new Pair(LAB, "brep", join(work, "run"), key);
  try {
    await labUp({ prefix: LAB.prefix });
    await createDataDisk(pImg, diskMiB, { overwrite: true });
    copyFileSync(pImg, sImg);
    const common = { name: "brep", ip: `${LAB.guestIp}/24`, mac: "00:16:3e:4c:00:b0", bridge: LAB.hostBridge, extra: "colo.appendfsync=always" };
    const pCfg = writeGuestConfig({ ...common, dir: join(work, "p"), disk: pImg }).cfg;
    const sCfg = writeGuestConfig({ ...common, dir: join(work, "s"), disk: sImg }).cfg;
    await pair.startArbiter();
    await pair.protect(pCfg, ["migrate", "--colo"], { secondaryConfig: sCfg });
    for (let i = 0; i < keys; i++) await pair.redis("SET", `bench:${i}`, `value-${i}-${"x".repeat(100)}`);
    process.kill((await pair.status(pair.h1)).pid, "SIGKILL");
    await waitFor("h2 runs alone", async () => (await pair.status(pair.h2).catch(() => undefined))?.replication?.mode === "unprotected", 60_000);

    const cases: Case[] = [await reprotect(pair, "old, activity logs", pCfg)];
    process.stderr.write(`reprotect: old image, activity logs: ${JSON.stringify(cases[0])}\n`);
    // End the session in order (the secondary discards its copy): the next case starts from the same point.
    const endSession = async () => {
      const ended = await pair.colo(pair.h2, ["failover", pair.name]);
      if (ended.code !== 0) throw new Error(`colo failover on the primary: ${ended.stderr}`);
      await waitFor("the session ended", async () => (await pair.status(pair.h2)).replication?.mode === "unprotected", 60_000);
      await stopDaemonsUnder(join(work, "run", "netns", pair.h1));
    };
    await endSession();
    cases.push(await reprotect(pair, "old, hash compare", pCfg, ["--full-disk-sync"]));
    process.stderr.write(`reprotect: old image, hash compare: ${JSON.stringify(cases[1])}\n`);
    await endSession();
    const size = statSync(pImg).size;
    truncateSync(pImg, 0);
    truncateSync(pImg, size);
    removeLog(pImg);
    cases.push(await reprotect(pair, "blank", pCfg));
    process.stderr.write(`reprotect: blank image: ${JSON.stringify(cases[2])}\n`);
    const [old, hashed, blank] = cases as [Case, Case, Case];
    const file = writeResult("reprotect", {
      figures: {
        diskMiB,
        keys,
        cases,
        ratios: {
          diskBytesOldOverBlank: blank.diskMiBCopied > 0 ? old.diskMiBCopied / blank.diskMiBCopied : null,
          startOldOverBlank: old.startMs / blank.startMs,
          clientPauseOldOverBlank: old.clientMaxReplyMs / blank.clientMaxReplyMs,
          diskMsLogsOverHash: hashed.diskMs > 0 ? old.diskMs / hashed.diskMs : null,
          startLogsOverHash: old.startMs / hashed.startMs,
        },
      },
    });
    process.stdout.write(`written ${file}\n`);
  } finally {
    await pair.destroyAll().catch(() => undefined);
    await stopDaemonsUnder(join(work, "run"));
    await pair.stopArbiter();
    await labDown({ prefix: LAB.prefix });
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`reprotect: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
