/**
 * Nothing left behind (issue 13): an integration test file's cleanup runs
 * when the file ends (an `after` hook) and also when its process is
 * interrupted -- SIGINT, SIGTERM or SIGHUP (Node's test runner passes a
 * SIGTERM it gets on to the test files' processes) -- which would otherwise
 * end it without running any hook, leaving VM daemons, lab namespaces and
 * files behind. Each cleanup runs once, whichever comes first.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after } from "node:test";
import { isDaemonAlive, liveVms } from "../../src/api/registry.js";

type Cleanup = () => Promise<void> | void;

const cleanups: Cleanup[] = [];
let installed = false;
/** A cleanup may take this long on an interrupt before the next one runs. */
const CLEANUP_BOUND_MS = 60_000;

function once(fn: Cleanup): Cleanup {
  let done: Promise<void> | undefined;
  return () => (done ??= Promise.resolve().then(fn));
}

const SIGNALS: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
const SIGNAL_NUMBERS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

async function onInterrupt(signal: NodeJS.Signals): Promise<void> {
  // The test runner may be gone already (it got the signal too): writing to its pipes then fails (EPIPE), and an
  // unhandled write error, or an error of the test still running meanwhile, must not end the cleanup half-way.
  for (const s of [process.stdout, process.stderr]) s.on("error", () => undefined);
  process.on("uncaughtException", () => undefined);
  process.on("unhandledRejection", () => undefined);
  process.stderr.write(`test: ${signal}: cleaning up (${cleanups.length} cleanup(s)) before exiting\n`);
  for (const fn of [...cleanups].reverse()) {
    try {
      await Promise.race([fn(), new Promise<void>((r) => setTimeout(r, CLEANUP_BOUND_MS).unref())]);
    } catch (err) {
      process.stderr.write(`test: cleanup after ${signal} failed: ${(err as Error).message}\n`);
    }
  }
  process.exit(128 + (SIGNAL_NUMBERS[signal] ?? 0));
}

/**
 * Registers `fn` as the file's cleanup: run by an `after` hook, or on an
 * interrupt (then the process exits 128+signal). Register cleanups in the
 * order things are made: on an interrupt they run last first.
 */
export function cleanupAlways(fn: Cleanup): void {
  const f = once(fn);
  cleanups.push(f);
  after(f);
  if (installed) return;
  installed = true;
  let interrupted = false;
  for (const s of SIGNALS) {
    process.on(s, () => {
      if (interrupted) return; // a second signal waits for the first cleanup
      interrupted = true;
      void onInterrupt(s);
    });
  }
}

/** PIDs of VM daemons (`__vm-daemon`) started with COLO_RUN_DIR = `runRoot` (read from /proc: root sees every process). */
export function daemonsOfRunDir(runRoot: string): number[] {
  const out: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (!readFileSync(`/proc/${e}/cmdline`, "utf8").includes("__vm-daemon")) continue;
      if (readFileSync(`/proc/${e}/environ`, "utf8").split("\0").includes(`COLO_RUN_DIR=${runRoot}`)) out.push(Number(e));
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return out;
}

/**
 * Ends every VM daemon of `runRoot`: those with a record in it or a lab
 * host's subfolder of it, and those started with it as COLO_RUN_DIR that
 * have none yet (waiting for a migration, or mid-create): SIGTERM (the
 * daemon removes its TAP and files), then SIGKILL after `graceMs`. For
 * cleanups that cannot rely on `colo destroy`. Returns the pids signalled.
 */
export async function stopDaemonsUnder(runRoot: string, graceMs = 10_000): Promise<number[]> {
  // The run directory and each lab host's subfolder (src/api/paths.ts runDir): the registry's view of each.
  const dirs = [runRoot, ...(existsSync(join(runRoot, "netns")) ? readdirSync(join(runRoot, "netns")).map((h) => join(runRoot, "netns", h)) : [])];
  // The registry's daemons, and those it cannot know yet: one waiting for its migration (no VM, no record) or
  // caught mid-create, found by the run directory in their environment.
  const pids = [...new Set([...dirs.flatMap((d) => liveVms(d).map((r) => r.pid)), ...daemonsOfRunDir(runRoot)])];
  for (const pid of pids) process.kill(pid, "SIGTERM");
  const deadline = performance.now() + graceMs;
  while (pids.some((p) => isDaemonAlive(p)) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  for (const pid of pids.filter((p) => isDaemonAlive(p))) process.kill(pid, "SIGKILL");
  return pids;
}
