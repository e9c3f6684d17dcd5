/**
 * The checkpoint pause against dirty pages (issue 15): how long the guest
 * stops for a checkpoint, and how long its output waits for the
 * secondary's SVM_READY, for N pages dirtied since the last one.
 *
 *   npm run build && node dist/bench/pause.js [--pages 100,300,1000,3000,10000] [--repeats 30] [--long 1000] [--long-repeats 1000]
 *
 * One guest, one COLO compare-mode session (periodic checkpoints off: only
 * the bench's). Each sample: a Lua script in the guest's Redis writes a new
 * tag into the first N 4 KiB steps of one string (N distinct pages), then
 * an operator checkpoint over the primary's control socket; the primary's
 * `lastPauseBreakdownMs` and the secondary's `applyPages`/`loadState` are
 * read after it. `--repeats` samples per size of `--pages` (the curve),
 * then `--long-repeats` at `--long` pages (the p99 target: ≤ 20 ms over
 * ≥ 1,000 checkpoints at 1,000 pages). The pages each checkpoint sent are
 * recorded (the guest dirties some of its own, and the SVM's are added).
 * Writes bench/results/pause-<timestamp>.json. Not a test: no figure fails
 * it. Needs root and the guest image; `COLO_TEST_ENGINE=qemu` for qemu.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { labDown, labTopology, labUp } from "../src/lab/lab.js";
import { generateKeyFile } from "../src/channel/key.js";
import { request } from "../src/api/control-client.js";
import { vmRunFiles } from "../src/api/paths.js";
import { COLO_BIN, runIn } from "../test/tools/run.js";
import { writeGuestConfig } from "../test/tools/guest-fixture.js";
import { redisFrom } from "../test/tools/lab-fixture.js";
import { positiveIntArg, positiveIntListArg } from "./args.js";
import { allocateDirtyBuffer, dirtyPages } from "./dirty-pages.js";
import { endSession } from "./lab-session.js";
import { writeResult } from "./results.js";

const LAB = labTopology("cbpau");
const [H1, H2] = LAB.hosts;
const NAME = "bpau";

interface Replication {
  checkpoints: number;
  lastPauseMs: number;
  lastCommitMs?: number;
  pagesPerCheckpoint: number;
  lastPauseBreakdownMs?: Record<string, number>;
}

interface Sample {
  pauseMs: number;
  commitMs: number;
  pages: number;
  primary: Record<string, number>;
  secondary: Record<string, number>;
}

interface Spread {
  n: number;
  median: number;
  p99: number;
  max: number;
  min: number;
}

function spread(values: number[]): Spread {
  const s = values.filter(Number.isFinite).sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(s.length * q))] ?? NaN;
  return { n: s.length, median: at(0.5), p99: at(0.99), max: s[s.length - 1] ?? NaN, min: s[0] ?? NaN };
}

/** Per phase name: the median over the samples. */
function medians(samples: Sample[], side: "primary" | "secondary"): Record<string, number> {
  const names = new Set(samples.flatMap((s) => Object.keys(s[side])));
  const out: Record<string, number> = {};
  for (const n of names) out[n] = spread(samples.map((s) => s[side][n] ?? NaN)).median;
  return out;
}

function summary(dirtied: number, samples: Sample[]) {
  return {
    dirtied,
    samples: samples.length,
    pauseMs: spread(samples.map((s) => s.pauseMs)),
    commitMs: spread(samples.map((s) => s.commitMs)),
    pages: spread(samples.map((s) => s.pages)),
    primaryPhasesMedianMs: medians(samples, "primary"),
    secondaryPhasesMedianMs: medians(samples, "secondary"),
  };
}

async function main(): Promise<void> {
  const sizes = positiveIntListArg("--pages", [100, 300, 1000, 3000, 10000]);
  const repeats = positiveIntArg("--repeats", 30);
  const long = positiveIntArg("--long", 1000);
  const longRepeats = positiveIntArg("--long-repeats", 1000);
  const work = mkdtempSync(join(tmpdir(), "colo-bpau-"));
  const runDir = join(work, "run");
  const env = { ...process.env, COLO_RUN_DIR: runDir };
  const key = join(work, "key");
  generateKeyFile(key);
  await labUp({ prefix: LAB.prefix });
  const colo = (host: string, args: string[]) => runIn(host, COLO_BIN, args, { env, timeoutMs: 600_000 });
  const must = async (what: string, p: ReturnType<typeof colo>) => {
    const r = await p;
    if (r.code !== 0) throw new Error(`${what}: ${r.stderr.trim()}`);
    return r;
  };
  // Straight to the daemons' control sockets: a CLI process per sample would cost more than some pauses.
  const socket = (host: string) => vmRunFiles(NAME, join(runDir, "netns", host)).socket;
  const replication = async (host: string) => ((await request(socket(host), { op: "status" })) as { replication?: Replication }).replication;
  const redis = (...args: string[]) => redisFrom(LAB.namespaces.client, LAB.guestIp, args);
  let seq = 0;
  const dirty = (pages: number) => dirtyPages(redis, pages, `t${String(seq++).padStart(7, "0")}`);
  const sample = async (pages: number): Promise<Sample> => {
    await dirty(pages);
    const cp = (await request(socket(H1), { op: "checkpoint", verifyDisks: false }, 120_000)) as { checkpoint: number; pauseMs: number; commitMs?: number };
    const p = await replication(H1);
    const s = await replication(H2);
    return { pauseMs: cp.pauseMs, commitMs: cp.commitMs ?? NaN, pages: p?.pagesPerCheckpoint ?? NaN, primary: p?.lastPauseBreakdownMs ?? {}, secondary: s?.lastPauseBreakdownMs ?? {} };
  };
  const started = Date.now();
  try {
    const cfg = writeGuestConfig({ dir: join(work, "guest"), name: NAME, ip: `${LAB.guestIp}/24`, mac: "00:16:3e:4c:00:92", bridge: LAB.hostBridge });
    await must("create", colo(H1, ["create", cfg.cfg]));
    const most = Math.max(...sizes, long) + 1;
    // One string of `most` pages, allocated before protection: its pages go with checkpoint 0.
    await allocateDirtyBuffer(redis, most);
    const recv = spawn("ip", ["netns", "exec", H2, COLO_BIN, "migrate-receive", "--colo", "--listen", LAB.replIps[1], "--key-file", key, "--detach"], { env, stdio: "ignore" });
    await new Promise<void>((resolve, reject) => recv.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`migrate-receive --colo exited ${code}`)))));
    const start = await must("migrate --colo", colo(H1, ["migrate", "--colo", NAME, LAB.replIps[1], "--key-file", key, "--checkpoint-max-interval", "3600000"]));
    const c0 = await replication(H1);
    process.stderr.write(`pause: protected (${start.stdout.trim().split("\n").pop() ?? ""})\n`);
    // Warm-up: the script's first runs, the SVM's first checkpoints.
    for (let i = 0; i < 5; i++) await sample(Math.min(...sizes));
    const curve: ReturnType<typeof summary>[] = [];
    for (const n of sizes) {
      const samples: Sample[] = [];
      for (let i = 0; i < repeats; i++) samples.push(await sample(n));
      const s = summary(n, samples);
      curve.push(s);
      process.stderr.write(`pause: ${n} pages dirtied (${s.pages.median} sent): pause median ${s.pauseMs.median} p99 ${s.pauseMs.p99} ms, commit median ${s.commitMs.median} p99 ${s.commitMs.p99} ms\n`);
    }
    const longSamples: Sample[] = [];
    for (let i = 0; i < longRepeats; i++) longSamples.push(await sample(long));
    const longRun = summary(long, longSamples);
    process.stderr.write(`pause: ${longRepeats} x ${long} pages: pause median ${longRun.pauseMs.median} p99 ${longRun.pauseMs.p99} max ${longRun.pauseMs.max} ms\n`);
    const after = await replication(H1);
    await endSession(colo, H1, H2, NAME);
    writeResult("pause", {
      seconds: Math.round((Date.now() - started) / 1000),
      checkpoint0: { pauseMs: c0?.lastPauseMs ?? null, commitMs: c0?.lastCommitMs ?? null, pages: c0?.pagesPerCheckpoint ?? null },
      checkpoints: after?.checkpoints ?? null,
      targets: { pauseP99MsAt1000Pages: 20, samplesAtLeast: 1000 },
      figures: { curve, long: longRun, met: longRun.pauseMs.p99 <= 20 && longRun.samples >= 1000 },
    });
  } finally {
    for (const h of LAB.hosts) await colo(h, ["destroy", NAME]).catch(() => undefined);
    await labDown({ prefix: LAB.prefix }).catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`pause: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
