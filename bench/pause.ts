/**
 * The checkpoint pause against dirty pages (issue 15): how long the guest
 * stops for a checkpoint, and how long its output waits for the
 * secondary's SVM_READY, for N pages dirtied since the last one.
 *
 *   npm run build && node dist/bench/pause.js [--pages 100,300,1000,3000,10000] [--repeats 30] [--long 1000] [--long-repeats 1000] [--dirty-logs auto,shadow-compare] [--placements unpinned,pinned]
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
 * `--dirty-logs` (emu): one session per value of COLO_DIRTY_LOG, in
 * one run (the kernel's write log against the shadow compare).
 * `--placements` (default both): one session per placement. Unpinned,
 * every process goes where the kernel puts it; pinned (`taskset`, as in
 * placement.ts), the primary's daemon and engine on CPU 0, the
 * secondary's on CPU 1 (its standby QEMUs inherit it), this script and the
 * redis-cli it runs on CPU 1: two hosts' work on one 2-core machine kept
 * apart, so that the primary's pause is not the secondary's standby start
 * or the client waiting for a core.
 * Writes bench/results/pause-<timestamp>.json. Not a test: no figure fails
 * it. Needs root and the guest image; `COLO_TEST_ENGINE=qemu` for qemu.
 */
import { monotonicMs } from "../src/sys/clock.js";
import { listArg, positiveIntArg, positiveIntListArg } from "./args.js";
import { ALL_CPUS, pinProcess } from "./bench-lab.js";
import { PauseSession, pauseSummary, type PauseSample } from "./pause-session.js";
import { writeResult } from "./results.js";

/** One session: the curve, then the long series. */
async function measure(sizes: number[], repeats: number, long: number, longRepeats: number, env: NodeJS.ProcessEnv, placement: Placement) {
  const started = monotonicMs();
  // One string of `most` pages, allocated before protection.
  const session = await PauseSession.open({ prefix: "cbpau", name: "bpau", mac: "00:16:3e:4c:00:92", bufferPages: Math.max(...sizes, long) + 1, env });
  let closed = false;
  try {
    if (placement === "pinned") {
      await session.lab.pinApart();
      // This process and the redis-cli it starts (they inherit it): the client's side.
      await pinProcess(process.pid, "1");
    }
    const dirtyLog = await session.dirtyLog();
    process.stderr.write(`pause: protected (${session.startLine}); dirty pages: ${JSON.stringify(dirtyLog)}\n`);
    // Warm-up: the script's first runs, the SVM's first checkpoints.
    for (let i = 0; i < 5; i++) await session.sample(Math.min(...sizes));
    const curve: ReturnType<typeof pauseSummary>[] = [];
    for (const n of sizes) {
      const samples: PauseSample[] = [];
      for (let i = 0; i < repeats; i++) samples.push(await session.sample(n));
      const s = pauseSummary(n, samples);
      curve.push(s);
      process.stderr.write(`pause: ${n} pages dirtied (${s.pages.median} sent): pause median ${s.pauseMs.median} p99 ${s.pauseMs.p99} ms, commit median ${s.commitMs.median} p99 ${s.commitMs.p99} ms\n`);
    }
    const longSamples: PauseSample[] = [];
    for (let i = 0; i < longRepeats; i++) longSamples.push(await session.sample(long));
    const longRun = pauseSummary(long, longSamples);
    const engineClock = longRun.engineStoppedMs ? `; on the engine's clock median ${longRun.engineStoppedMs.median} p99 ${longRun.engineStoppedMs.p99} max ${longRun.engineStoppedMs.max} ms` : "";
    process.stderr.write(`pause: ${longRepeats} x ${long} pages: pause median ${longRun.pauseMs.median} p99 ${longRun.pauseMs.p99} max ${longRun.pauseMs.max} ms${engineClock}\n`);
    const checkpoints = await session.checkpoints();
    closed = true;
    await session.close();
    return {
      seconds: Math.round((monotonicMs() - started) / 1000),
      dirtyLog,
      checkpoint0: session.checkpoint0,
      checkpoints,
      curve,
      long: longRun,
      met: longRun.pauseMs.p99 <= 20 && longRun.samples >= 1000,
      // The same target on the engine's clock (the vCPUs' own stop), where the engine times it.
      ...(longRun.engineStoppedMs ? { metOnEngineClock: longRun.engineStoppedMs.p99 <= 20 && longRun.engineStoppedMs.n >= 1000 } : {}),
    };
  } finally {
    if (!closed) await session.close().catch(() => undefined);
    if (placement === "pinned") await pinProcess(process.pid, ALL_CPUS);
  }
}

type Placement = "unpinned" | "pinned";

async function main(): Promise<void> {
  const sizes = positiveIntListArg("--pages", [100, 300, 1000, 3000, 10000]);
  const repeats = positiveIntArg("--repeats", 30);
  const long = positiveIntArg("--long", 1000);
  const longRepeats = positiveIntArg("--long-repeats", 1000);
  // emu: COLO_DIRTY_LOG per session (docs/engines.md), e.g. "auto,shadow-compare" to measure both in one run.
  const dirtyLogs = listArg("--dirty-logs", ["auto"]);
  for (const d of dirtyLogs) if (d !== "auto" && d !== "shadow-compare") throw new Error(`--dirty-logs: ${d} is not auto or shadow-compare`);
  const placements = listArg("--placements", ["unpinned", "pinned"]);
  const isPlacement = (p: string): p is Placement => p === "unpinned" || p === "pinned";
  for (const p of placements) if (!isPlacement(p)) throw new Error(`--placements: ${p} is not unpinned or pinned`);
  const sessions = [];
  for (const d of dirtyLogs) {
    for (const p of placements.filter(isPlacement)) {
      process.stderr.write(`pause: session COLO_DIRTY_LOG=${d}, ${p}\n`);
      sessions.push({ dirtyLogAsked: d, placement: p, ...(await measure(sizes, repeats, long, longRepeats, { COLO_DIRTY_LOG: d }, p)) });
    }
  }
  const [first] = sessions;
  if (!first) throw new Error("no session");
  writeResult("pause", {
    // The first session's figures at the top level (as before --dirty-logs); every session's in `sessions`.
    placements: { pinned: "primary daemon + engine on CPU 0, secondary's (and its standbys) on CPU 1, this script and redis-cli on CPU 1 (taskset -a -p)", unpinned: "no affinity set" },
    seconds: sessions.reduce((a, s) => a + s.seconds, 0),
    checkpoint0: first.checkpoint0,
    checkpoints: first.checkpoints,
    targets: { pauseP99MsAt1000Pages: 20, samplesAtLeast: 1000 },
    ...(sessions.length > 1 ? { sessions } : {}),
    figures: { curve: first.curve, long: first.long, met: first.met, ...(first.metOnEngineClock !== undefined ? { metOnEngineClock: first.metOnEngineClock } : {}), dirtyLog: first.dirtyLog },
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`pause: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
