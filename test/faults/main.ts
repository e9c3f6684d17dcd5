/**
 * `npm run faults -- --runs N [--seed S] [--kinds a,b] [--memory MiB]`: the fault-injection
 * suite (test/faults/fault-suite.ts), outside the default test run. Writes
 * bench/results/faults-<timestamp>.json; exits 1 if any acknowledged write
 * was lost, a split brain happened, or a run failed. Needs root and the
 * guest image (each run brings its own lab up and down). The engine is
 * COLO_TEST_ENGINE's (emu by default, or qemu); kill-primary-engine (SIGKILL
 * of the primary's QEMU) is one of the kinds only on qemu.
 *
 * `npm run faults -- --memtest [--checkpoints N] [--size 16M] [--interval MS]`:
 * the memory-integrity run instead (test/faults/memtest.ts), written to
 * bench/results/memtest-<timestamp>.json; exit 1 on any corruption.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { generateKeyFile } from "../../src/channel/key.js";
import { labDown, labTopology, labUp } from "../../src/lab/lab.js";
import { writeResult } from "../../bench/results.js";
import { FAULT_KINDS, FaultSuite, faultKindsFor, type FaultKind } from "./fault-suite.js";
import { TEST_ENGINE } from "../tools/guest-fixture.js";
import { runMemtest } from "./memtest.js";

class UsageError extends Error {}

/** A whole number in [min, max] from option `name`, or `fallback` when absent. */
function wholeNumber(values: Record<string, string | boolean | undefined>, name: string, fallback: number, min: number, max: number): number {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (typeof raw !== "string" || !/^\d+$/.test(raw) || n < min || n > max) throw new UsageError(`--${name} must be a whole number in ${min}..${max}, got ${JSON.stringify(raw)}`);
  return n;
}

async function main(argv: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        runs: { type: "string" },
        seed: { type: "string" },
        kinds: { type: "string" },
        memtest: { type: "boolean" },
        checkpoints: { type: "string" },
        size: { type: "string" },
        interval: { type: "string" },
        memory: { type: "string" },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const lab = labTopology("cflt");
  const work = mkdtempSync(join(tmpdir(), "colo-faults-"));
  try {
    if (values.memtest === true) {
      const checkpoints = wholeNumber(values, "checkpoints", 1000, 1, 1_000_000);
      const intervalMs = wholeNumber(values, "interval", 50, 1, 3_600_000);
      const size = typeof values.size === "string" ? values.size : "16M";
      if (!/^\d+[KMG]?$/.test(size)) throw new UsageError(`--size must be memtester's size (e.g. 16M), got ${JSON.stringify(size)}`);
      const key = join(work, "colo.key");
      generateKeyFile(key);
      await labUp({ prefix: lab.prefix });
      try {
        const r = await runMemtest(lab, work, key, { checkpoints, size, intervalMs, log: (l) => process.stderr.write(l + "\n") });
        writeResult("memtest", { figures: r });
        return r.ok ? 0 : 1;
      } finally {
        await labDown({ prefix: lab.prefix });
      }
    }
    const runs = wholeNumber(values, "runs", 10, 1, 10_000);
    const seed = wholeNumber(values, "seed", Date.now() % 1_000_000, 0, Number.MAX_SAFE_INTEGER); // a fresh seed when none is given
    const possible = faultKindsFor(TEST_ENGINE);
    const kinds = (typeof values.kinds === "string" ? values.kinds.split(",") : possible) as FaultKind[];
    for (const k of kinds) {
      if (!(FAULT_KINDS as readonly string[]).includes(k)) throw new UsageError(`unknown fault kind ${k}; kinds: ${FAULT_KINDS.join(", ")}`);
      if (!possible.includes(k)) throw new UsageError(`fault kind ${k} needs another engine than ${TEST_ENGINE} (COLO_TEST_ENGINE=qemu); kinds here: ${possible.join(", ")}`);
    }
    process.stderr.write(`faults: seed ${seed} (replay with --seed ${seed})\n`);
    const memoryMiB = values.memory === undefined ? undefined : wholeNumber(values, "memory", 0, 16, 65_536);
    const suite = new FaultSuite(lab, work, undefined, memoryMiB === undefined ? {} : { memoryMiB });
    // Interrupted (Ctrl-C, SIGTERM): the run in progress's daemons, arbiter and lab go, no run starts after it,
    // and the runs done so far are written (marked interrupted). A second signal exits at once.
    let interrupted = false;
    for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
      process.on(sig, () => {
        if (interrupted) {
          rmSync(work, { recursive: true, force: true });
          process.exit(130);
        }
        interrupted = true;
        process.stderr.write(`faults: ${sig}: removing the run in progress; the runs done are written (again to exit at once)\n`);
        void suite.abort().catch((err: unknown) => process.stderr.write(`faults: cleanup: ${(err as Error).message}\n`));
      });
    }
    const summary = await suite.runAll(runs, seed, kinds);
    if (summary.runs > 0) writeResult("faults", { ...(memoryMiB !== undefined ? { memoryMiB } : {}), figures: summary });
    if (interrupted) return 130;
    const bad = summary.lostWrites > 0 || summary.incrViolations > 0 || summary.splitBrains > 0 || summary.failedRuns > 0;
    return bad ? 1 : 0;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`faults: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  },
);
