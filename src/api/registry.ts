import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { runDir, vmRunFiles } from "./paths.js";
import { readRecord, type VmRecord } from "./vm-record.js";

/** Is `pid` a live colo VM daemon (not a reused pid of another program)? */
export function isDaemonAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    return cmdline.includes("__vm-daemon");
  } catch {
    return false;
  }
}

/** Has process `pid` ended? (src/sys/process.ts; re-exported for the CLI.) */
export { processEnded } from "../sys/index.js";

/** Removes what a dead daemon left behind. */
export function removeStale(name: string, dir = runDir()): void {
  const files = vmRunFiles(name, dir);
  rmSync(files.record, { force: true });
  rmSync(files.socket, { force: true });
}

/**
 * The VMs whose daemons are alive. Records of dead daemons (SIGKILL, crash)
 * are removed on the way, so `colo list` never shows a stale entry.
 */
export function liveVms(dir = runDir()): VmRecord[] {
  if (!existsSync(dir)) return [];
  const out: VmRecord[] = [];
  for (const entry of readdirSync(dir).sort()) {
    if (!entry.endsWith(".json")) continue;
    const record = readRecord(join(dir, entry));
    const name = entry.slice(0, -".json".length);
    if (!record) continue;
    if (isDaemonAlive(record.pid)) out.push(record);
    else removeStale(name, dir);
  }
  return out;
}

export function findVm(name: string, dir = runDir()): VmRecord | undefined {
  return liveVms(dir).find((r) => r.name === name);
}
