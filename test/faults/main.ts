/**
 * `npm run faults -- --runs N [--seed S] [--kinds a,b]`: the fault-injection
 * suite (test/faults/fault-suite.ts), outside the default test run. Writes
 * bench/results/faults-<timestamp>.json; exits 1 if any acknowledged write
 * was lost, a split brain happened, or a run failed. Needs root and the
 * guest image (it brings its own lab up and down). The engine is
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
import { generateKeyFile } from "../../src/channel/key.js";
import { labDown, labTopology, labUp } from "../../src/lab/lab.js";
import { writeResult } from "../../bench/results.js";
import { FAULT_KINDS, FaultSuite, faultKindsFor, type FaultKind } from "./fault-suite.js";
import { TEST_ENGINE } from "../tools/guest-fixture.js";
import { runMemtest } from "./memtest.js";

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<number> {
  const runs = Number(arg("--runs") ?? "10");
  const seed = Number(arg("--seed") ?? String(Date.now() % 1_000_000));

  if (!Number.isInteger(runs) || runs < 1 || runs > 10_000) throw new Error(`--runs must be 1..10000, got ${arg("--runs")}`);
  if (!Number.isInteger(seed) || seed < 0) throw new Error(`--seed must be a whole number, got ${arg("--seed")}`);
  const kindsArg = arg("--kinds");
  const possible = faultKindsFor(TEST_ENGINE);
  const kinds = (kindsArg ? kindsArg.split(",") : possible) as FaultKind[];
  for (const k of kinds) {
    if (!(FAULT_KINDS as readonly string[]).includes(k)) throw new Error(`unknown fault kind ${k}; kinds: ${FAULT_KINDS.join(", ")}`);
    if (!possible.includes(k)) throw new Error(`fault kind ${k} needs another engine than ${TEST_ENGINE} (COLO_TEST_ENGINE=qemu); kinds here: ${possible.join(", ")}`);
  }
  const lab = labTopology("cflt");
  const work = mkdtempSync(join(tmpdir(), "colo-faults-"));
  const key = join(work, "colo.key");
  generateKeyFile(key);
  await labUp({ prefix: lab.prefix });
  try {
    if (process.argv.includes("--memtest")) {
      const checkpoints = Number(arg("--checkpoints") ?? "1000");
      const intervalMs = Number(arg("--interval") ?? "50");
      const size = arg("--size") ?? "16M";
      if (!Number.isInteger(checkpoints) || checkpoints < 1) throw new Error(`--checkpoints must be a positive whole number`);
      if (!Number.isInteger(intervalMs) || intervalMs < 1) throw new Error(`--interval must be a positive whole number of ms`);
      const r = await runMemtest(lab, work, key, { checkpoints, size, intervalMs, log: (l) => process.stderr.write(l + "\n") });
      writeResult("memtest", { figures: r });
      return r.ok ? 0 : 1;
    }
    process.stderr.write(`faults: seed ${seed} (replay with --seed ${seed})\n`);
    const summary = await new FaultSuite(lab, work, key).runAll(runs, seed, kinds);
    writeResult("faults", { figures: summary });
    const bad = summary.lostWrites > 0 || summary.incrViolations > 0 || summary.splitBrains > 0 || summary.failedRuns > 0;
    return bad ? 1 : 0;
  } finally {
    await labDown({ prefix: lab.prefix });
    rmSync(work, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`faults: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  },
);
