/**
 * Whether a process still runs, from the kernel's view: kill(pid, 0) and
 * /proc/<pid>/stat (a zombie has exited and only waits to be reaped).
 */
import { readFileSync } from "node:fs";

/** Has process `pid` ended? True when it no longer exists or is a zombie. */
export function processEnded(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ESRCH";
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return true;
  }
}
