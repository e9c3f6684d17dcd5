import { readFileSync } from "node:fs";

/** utime + stime of a process, in clock ticks (proc(5): fields 14 and 15). */
export function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

/** getconf CLK_TCK on Linux x86. */
export const CLOCK_TICKS_PER_SEC = 100;
