/**
 * Disk replication end to end (issue 6): Redis keeps its append-only file
 * (appendfsync always) on a data disk that the primary replicates to the
 * secondary's own image while COLO compare mode runs. The secondary
 * starts from a stale copy of the image (the initial sync copies what
 * differs). Checks: images byte-identical inside a checkpoint; after
 * SIGKILL of the primary under write load, every acknowledged write is in
 * the survivor, and a fresh VM booted from the survivor's image reloads
 * them all from its AOF.
 *
 * Needs root and the guest image. Generous timeouts: two emulated guests
 * and a client on 2 cores.
 */
import { before } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { labDown, labTopology, labUp } from "../../src/lab/lab.js";
import { generateKeyFile } from "../../src/channel/key.js";
import { createDataDisk } from "../../guest/mkdisk.js";
import { runIn } from "../tools/run.js";
import { writeGuestConfig } from "../tools/guest-fixture.js";
import { integrationSkip, preconditionTest } from "../tools/lab-fixture.js";
import { Pair, waitFor } from "../tools/pair-fixture.js";
import { cleanupAlways, stopDaemonsUnder } from "../tools/interrupt.js";

const LAB = labTopology("ctdsk");
const skip = integrationSkip();
const itest = preconditionTest(skip);

let work = "";
let primaryCfg = "";
let secondaryCfg = "";
let primaryImg = "";
let secondaryImg = "";
let pair: Pair;

before(async () => {
  if (skip) return;
  work = mkdtempSync(join(tmpdir(), "colo-dsk-"));
  const key = join(work, "colo.key");
  generateKeyFile(key);
  await labUp({ prefix: LAB.prefix });
  primaryImg = join(work, "primary.img");
  secondaryImg = join(work, "secondary.img");
  const common = { name: "dsk", ip: `${LAB.guestIp}/24`, mac: "00:16:3e:4c:00:80", bridge: LAB.hostBridge, extra: "colo.appendfsync=always" };
  primaryCfg = writeGuestConfig({ ...common, dir: join(work, "p"), disk: primaryImg }).cfg;
  // The secondary's config names its own image (sent with colo migrate --colo -C).
  secondaryCfg = writeGuestConfig({ ...common, dir: join(work, "s"), disk: secondaryImg }).cfg;
  pair = new Pair(LAB, "dsk", join(work, "run"), key);
});

cleanupAlways(async () => {
  if (skip || !work) return;
  await pair.destroyAll();
  await stopDaemonsUnder(join(work, "run"));
  await pair.stopArbiter();
  await labDown({ prefix: LAB.prefix });
  rmSync(work, { recursive: true, force: true });
});

/** A fresh data disk for the primary; the secondary gets a copy taken before the primary booted (it will differ). */
async function freshImages(): Promise<void> {
  await createDataDisk(primaryImg, 64, { overwrite: true });
  copyFileSync(primaryImg, secondaryImg);
}

const COMPARE = ["migrate", "--colo", "--checkpoint-max-interval", "600000"];

itest("disk: the secondary image is synced, then byte-identical to the primary's inside every checkpoint", { timeout: 900_000 }, async () => {
  await freshImages();
  await pair.protect(primaryCfg, COMPARE, { secondaryConfig: secondaryCfg });
  for (let i = 0; i < 50; i++) assert.equal(await pair.redis("SET", `k${i}`, `v${i}`), "OK");
  const cp = await pair.colo(pair.h1, ["checkpoint", "dsk", "--verify-disks"]);
  assert.equal(cp.code, 0, cp.stderr);
  const primary = JSON.parse(cp.stdout) as { diskHashes: { disk: number; sha256: string }[] };
  const sec = await pair.colo(pair.h2, ["disk-hashes", "dsk"]);
  assert.equal(sec.code, 0, sec.stderr);
  const secondary = JSON.parse(sec.stdout) as { role: string; disks: { disk: number; sha256: string }[] };
  assert.equal(secondary.role, "secondary");
  assert.equal(primary.diskHashes.length, 1);
  assert.deepEqual(secondary.disks, primary.diskHashes, "the secondary's image is the primary's as of the checkpoint");
  const st = await pair.status(pair.h2);
  const disks = (st.proxy?.disks ?? []) as { checkpoints: number; syncWrites: number; appliedWrites: number }[];
  assert.ok((disks[0]?.syncWrites ?? 0) > 0, `the stale copy was synced: ${JSON.stringify(disks)}`);
  assert.ok((disks[0]?.appliedWrites ?? 0) > 0, `forwarded writes were applied at checkpoints: ${JSON.stringify(disks)}`);
});

itest("disk: SIGKILL of the primary under AOF write load; the survivor has every acknowledged write and reloads its AOF", { timeout: 900_000 }, (t) =>
  pair.explained(async () => {
    await freshImages();
    await pair.protect(primaryCfg, COMPARE, { secondaryConfig: secondaryCfg });
    const incr = pair.startIncr();
    // Clients that cannot end (a stuck connection) are killed when the test ends, pass or fail, instead of
    // keeping the file's process alive for their whole timeouts.
    const benchAbort = new AbortController();
    t.after(() => {
      benchAbort.abort();
      if (incr.child.exitCode === null) incr.child.kill("SIGKILL");
    });
    const bench = runIn(pair.client, "redis-benchmark", ["-h", pair.ip, "-t", "set", "-n", "20000", "-c", "4", "-r", "10000", "-q"], {
      timeoutMs: 300_000,
      signal: benchAbort.signal,
    }).catch((e: unknown) => ({ code: null, signal: null, stdout: "", stderr: `redis-benchmark: ${(e as Error).message}` }));
    await waitFor("writes flow", async () => Number((await pair.redis("GET", "colo:incr")) || "0") > 100, 120_000);
    const primary = await pair.status(pair.h1);
    process.kill(primary.pid, "SIGKILL");
    let seen = "";
    await waitFor(
      () => `the secondary takes over (last status: ${seen})`,
      async () => {
        const st = await pair.status(pair.h2);
        seen = JSON.stringify({ state: st.state, replication: st.replication });
        return st.replication?.mode === "unprotected";
      },
      30_000,
    );
    const before = await pair.incrCount();
    await waitFor("INCRs continue after the takeover", async () => (await pair.incrCount()) > before + 5, 60_000);
    const r = await incr.result();
    const b = await bench; // it may end with errors or not: what matters is the acknowledged INCRs
    const seenByClient = `INCR client ${JSON.stringify(r)}; redis-benchmark exit ${b.code} ${b.stderr.slice(-300)}`;
    assert.deepEqual(r.errors, [], seenByClient);
    assert.equal(r.connectionResets, 0, seenByClient);
    assert.equal(r.gaps, 0, `every acknowledged INCR is in the survivor, none twice: ${seenByClient}`);
    assert.equal(await pair.redis("GET", "colo:incr"), String(r.last), seenByClient);
    const dbsize = Number(await pair.redis("DBSIZE"));

    // The survivor's disk: destroy it and boot a fresh VM from the image; Redis reloads the AOF.
    const d = await pair.colo(pair.h2, ["destroy", "dsk"]);
    assert.equal(d.code, 0, d.stderr);
    const again = await pair.colo(pair.h2, ["create", secondaryCfg]);
    assert.equal(again.code, 0, `the survivor's image boots and Redis loads its AOF: ${again.stderr}`);
    assert.equal(await pair.redis("GET", "colo:incr"), String(r.last), "the last acknowledged INCR is on the survivor's disk");
    assert.equal(Number(await pair.redis("DBSIZE")), dbsize, "the survivor's AOF holds every key the survivor served");
  }),
);
