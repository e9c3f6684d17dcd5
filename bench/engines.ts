/**
 * Both engines side by side in one run (issue 12, "Measure"): for each of
 * --engines (default emu,qemu), on a fresh lab (prefix cbeng), a worker
 * (bench/engine-run.ts) with COLO_TEST_ENGINE set to it measures boot to
 * Redis ready; unprotected Redis SET/GET ops/s, p50/p99 with 1 and 16
 * clients; COLO compare mode and Remus (100 ms) over that baseline; the
 * checkpoint pause and its breakdown for ~100 and ~1,000 dirty pages
 * (median and max of 5); live-migration downtime, idle. Then the ratio
 * qemu/emu of every figure, and issue 12's targets: qemu boots in ≤ 5 s,
 * qemu's unprotected Redis ≥ 3× emu's, device-state save + load ≤ 20 ms of
 * the pause.
 *
 *   npm run build && node dist/bench/engines.js [--requests N] [--engines emu,qemu] [--pages 100,1000] [--repeats 5] [--migrations 3]
 *
 * Writes one bench/results/engines-<timestamp>.json. A phase that failed is
 * in the result with its error; exit 1 then. Not a test: never fails for
 * being slow. Needs root and both guest images (colo image build).
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { labDown, labTopology, labUp } from "../src/lab/lab.js";
import { COLO_BIN, REPO_ROOT, runIn } from "../test/tools/run.js";
import { writeResult } from "./results.js";
import { machineInfo } from "./machine.js";
import { listArg, positiveIntArg, positiveIntListArg } from "./args.js";
import {
  ENGINES_LAB_PREFIX,
  ENGINES_VM_NAME,
  REMUS_INTERVAL_MS,
  engineTargets,
  failedRun,
  figureRatios,
  flatFigures,
  isEngineId,
  isEngineRun,
  PHASE_NAMES,
  type EngineId,
  type EngineRun,
} from "./engine-figures.js";

const LAB = labTopology(ENGINES_LAB_PREFIX);
/** One engine's worker, at most (a whole run takes some 3-6 minutes per engine). */
const WORKER_TIMEOUT_MS = 60 * 60_000;
const STDERR_TAIL = 4000;

/** Runs bench/engine-run.js with COLO_TEST_ENGINE=engine; its progress goes to our stderr. */
function runWorker(engine: EngineId, work: string, args: string[]): Promise<EngineRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(REPO_ROOT, "dist/bench/engine-run.js"), "--work", work, ...args], {
      env: { ...process.env, COLO_TEST_ENGINE: engine },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderrTail = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => {
      process.stderr.write(c);
      stderrTail = (stderrTail + c.toString()).slice(-STDERR_TAIL);
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), WORKER_TIMEOUT_MS);
    const finish = (why: string) => {
      clearTimeout(timer);
      const line = stdout
        .split("\n")
        .reverse()
        .find((l) => l.startsWith("{"));
      if (line !== undefined) {
        try {
          const parsed: unknown = JSON.parse(line);
          if (isEngineRun(parsed, engine)) return resolve(parsed);
        } catch {
          // not the worker's figures: reported below
        }
      }
      resolve(failedRun(engine, `engine-run ${why} without its figures: ${stderrTail.trim().split("\n").slice(-5).join(" | ")}`));
    };
    child.on("error", (err) => finish(`could not start (${err.message})`));
    child.on("close", (code, signal) => finish(signal ? `killed by ${signal}${signal === "SIGKILL" ? ` (timeout ${WORKER_TIMEOUT_MS / 60_000} min?)` : ""}` : `exited ${code}`));
  });
}

async function main(): Promise<void> {
  const requests = positiveIntArg("--requests", 5000);
  const pages = positiveIntListArg("--pages", [100, 1000]);
  const repeats = positiveIntArg("--repeats", 5);
  const migrations = positiveIntArg("--migrations", 3);
  const engines = listArg("--engines", ["emu", "qemu"]).map((e) => {
    if (!isEngineId(e)) throw new Error(`--engines: ${e} is not an engine (emu, qemu)`);
    return e;
  });
  if (new Set(engines).size !== engines.length) throw new Error("--engines names an engine twice");
  const workerArgs = ["--requests", String(requests), "--pages", pages.join(","), "--repeats", String(repeats), "--migrations", String(migrations)];

  const runs: Partial<Record<EngineId, EngineRun>> = {};
  for (const engine of engines) {
    process.stderr.write(`engines: ${engine} ...\n`);
    const work = mkdtempSync(join(tmpdir(), `colo-beng-${engine}-`));
    try {
      await labUp({ prefix: LAB.prefix });
      runs[engine] = await runWorker(engine, work, workerArgs);
    } catch (err) {
      runs[engine] = failedRun(engine, err instanceof Error ? err.message : String(err));
    } finally {
      // The worker destroys its VMs; one that was killed leaves them: destroyed here.
      const env = { ...process.env, COLO_RUN_DIR: join(work, "run") };
      for (const h of LAB.hosts) await runIn(h, COLO_BIN, ["destroy", ENGINES_VM_NAME], { env, timeoutMs: 60_000 }).catch(() => undefined);
      await labDown({ prefix: LAB.prefix }).catch((err: unknown) => process.stderr.write(`engines: lab down: ${err instanceof Error ? err.message : String(err)}\n`));
      rmSync(work, { recursive: true, force: true });
    }
  }

  const info = machineInfo();
  const perEngine: Record<string, unknown> = {};
  const failures: { engine: EngineId; phase: string; error: string }[] = [];
  const flat: Partial<Record<EngineId, Record<string, number>>> = {};
  for (const engine of engines) {
    const run = runs[engine];
    if (!run) continue;
    flat[engine] = flatFigures(run);
    for (const name of PHASE_NAMES) {
      const ph = run.phases[name];
      if (!ph.ok) failures.push({ engine, phase: name, error: ph.error });
    }
    perEngine[engine] = {
      engine,
      engineVersion: engine === "qemu" ? { qemu: info.qemu } : { v86: info.v86 },
      guest: run.guest,
      memoryMiB: run.vm?.memoryMiB ?? null,
      vm: run.vm,
      phases: run.phases,
    };
  }
  const ratios = flat.qemu && flat.emu ? figureRatios(flat.qemu, flat.emu) : undefined;

  writeResult("engines", {
    engine: engines.join(","),
    guest: Object.fromEntries(engines.map((e) => [e, runs[e]?.guest ?? null])),
    settings: { engines, requestsPerTest: requests, dirtyPages: pages, repeats, migrations, remusIntervalMs: REMUS_INTERVAL_MS },
    figures: {
      targets: engineTargets(runs),
      perEngine,
      ...(ratios ? { ratiosQemuToEmu: ratios } : {}),
      failures,
    },
  });
  if (failures.length > 0) {
    process.stderr.write(`engines: ${failures.length} phase(s) failed: ${failures.map((f) => `${f.engine}/${f.phase}`).join(", ")}\n`);
    process.exitCode = 1;
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
