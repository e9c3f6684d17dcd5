/**
 * Two curves against the guest's RAM in one run (issue 15): the checkpoint
 * pause at a fixed number of dirty pages, and the failover time.
 *
 *   npm run build && node dist/bench/ram-curve.js [--memory 128,192,256,384,512] [--pages 1000] [--repeats 30] [--failovers 5] [--seed S]
 *
 * Per size of `--memory` (MiB):
 *
 * - the pause: a guest of that size protected in compare mode (pause-session.ts),
 *   checkpoint 0's pause and commit, then `--repeats` operator checkpoints
 *   of `--pages` dirtied pages each (5 more first, not counted): pause,
 *   commit, pages sent, the primary's and secondary's phases (medians);
 * - the failover: `--failovers` runs of the fault suite's kill-primary
 *   (test/faults/fault-suite.ts: a guest of that size with its data disk,
 *   an arbiter, the verifying client on 2 connections; SIGKILL of the
 *   primary's daemon after 2-6 s of load): the client's longest gap between
 *   acknowledgements (detection included), and what the suite checks (no
 *   write lost, no reset, one sender on the wire).
 *
 * A size whose guest does not fit or boot is recorded with its error and
 * the run goes on. Writes bench/results/ram-curve-<timestamp>.json. Not a
 * test: no figure fails it. Needs root and the guest image;
 * `COLO_TEST_ENGINE=qemu` for qemu.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { labTopology } from "../src/lab/lab.js";
import { monotonicMs } from "../src/sys/clock.js";
import { FaultSuite } from "../test/faults/fault-suite.js";
import { positiveIntArg, positiveIntListArg } from "./args.js";
import { PauseSession, pauseSummary, type PauseSample } from "./pause-session.js";
import { writeResult } from "./results.js";

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function pauseAt(memoryMiB: number, pages: number, repeats: number) {
  const session = await PauseSession.open({ prefix: "cbram", name: "bram", mac: "00:16:3e:4c:00:93", bufferPages: pages + 1, memoryMiB });
  try {
    for (let i = 0; i < 5; i++) await session.sample(pages);
    const samples: PauseSample[] = [];
    for (let i = 0; i < repeats; i++) samples.push(await session.sample(pages));
    return { checkpoint0: session.checkpoint0, ...pauseSummary(pages, samples) };
  } finally {
    await session.close();
  }
}

async function failoverAt(memoryMiB: number, runs: number, seed: number) {
  const work = mkdtempSync(join(tmpdir(), "colo-bram-faults-"));
  try {
    const suite = new FaultSuite(labTopology("cbrfl"), work, (l) => process.stderr.write(`${l}\n`), { memoryMiB });
    const s = await suite.runAll(runs, seed, ["kill-primary"]);
    return {
      runs: s.runs,
      seed,
      failoverMs: s.failoverMs,
      perRunMs: s.details.map((d) => d.failoverMs),
      acknowledgedWrites: s.acknowledgedWrites,
      lostWrites: s.lostWrites,
      connectionResets: s.connectionResets,
      splitBrains: s.splitBrains,
      failedRuns: s.failedRuns,
      errors: s.details.filter((d) => d.error !== undefined).map((d) => `run ${d.run}: ${d.error ?? ""}`),
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const sizes = positiveIntListArg("--memory", [128, 192, 256, 384, 512]);
  const pages = positiveIntArg("--pages", 1000);
  const repeats = positiveIntArg("--repeats", 30);
  const failovers = positiveIntArg("--failovers", 5);
  const seed = positiveIntArg("--seed", 1203);
  const started = monotonicMs();
  const curve: Record<string, unknown>[] = [];
  for (const memoryMiB of sizes) {
    const point: Record<string, unknown> = { memoryMiB };
    try {
      const p = await pauseAt(memoryMiB, pages, repeats);
      point.pause = p;
      process.stderr.write(`ram-curve: ${memoryMiB} MiB: checkpoint 0 pause ${p.checkpoint0.pauseMs} ms; ${pages} pages: pause median ${p.pauseMs.median} p99 ${p.pauseMs.p99} ms, commit median ${p.commitMs.median} ms\n`);
    } catch (err) {
      point.pauseError = errorText(err);
      process.stderr.write(`ram-curve: ${memoryMiB} MiB: pause: ${errorText(err)}\n`);
    }
    try {
      const f = await failoverAt(memoryMiB, failovers, seed + memoryMiB);
      point.failover = f;
      process.stderr.write(`ram-curve: ${memoryMiB} MiB: failover ${JSON.stringify(f.failoverMs)}, lost ${f.lostWrites}, failed runs ${f.failedRuns}\n`);
    } catch (err) {
      point.failoverError = errorText(err);
      process.stderr.write(`ram-curve: ${memoryMiB} MiB: failover: ${errorText(err)}\n`);
    }
    curve.push(point);
  }
  writeResult("ram-curve", {
    seconds: Math.round((monotonicMs() - started) / 1000),
    pages,
    repeats,
    failovers,
    targets: { pauseP99MsAt1000Pages: 20, failoverP99Ms: 1000 },
    figures: { curve },
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`ram-curve: ${errorText(err)}\n`);
  process.exit(1);
});
