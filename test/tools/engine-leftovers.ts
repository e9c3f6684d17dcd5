/**
 * What a qemu engine of a daemon may leave on this host: QEMU processes and
 * the engine directory `/dev/shm/colo-<vm>-p<daemon pid>-XXXXXX`
 * (docs/engines.md "Files"). Matched by the daemon's pid, so the other
 * host's copy of the same VM (same name, in the lab's other namespace) is
 * not counted.
 */
import { readdirSync, readFileSync } from "node:fs";

export interface EngineLeftovers {
  /** pids of processes whose command line names the daemon's engine directory (QEMU, running or standby). */
  processes: number[];
  /** Engine directories of the daemon in /dev/shm. */
  dirs: string[];
}

export function engineLeftovers(vm: string, daemonPid: number): EngineLeftovers {
  const prefix = `colo-${vm.slice(0, 24)}-p${daemonPid}-`;
  const processes: number[] = [];
  for (const p of readdirSync("/proc")) {
    if (!/^\d+$/.test(p)) continue;
    let cmdline = "";
    try {
      cmdline = readFileSync(`/proc/${p}/cmdline`, "latin1");
    } catch {
      continue; // gone meanwhile
    }
    if (cmdline.includes(`/dev/shm/${prefix}`)) processes.push(Number(p));
  }
  return { processes, dirs: readdirSync("/dev/shm").filter((d) => d.startsWith(prefix)) };
}
