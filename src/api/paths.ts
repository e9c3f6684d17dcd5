import { join } from "node:path";

/**
 * Where VM daemons keep their control sockets and records. `COLO_RUN_DIR`
 * overrides the default (tests use a private folder so they never touch a
 * developer's VMs).
 */
export function runDir(): string {
  return process.env.COLO_RUN_DIR ?? "/run/colo";
}

export interface VmRunFiles {
  /** Control socket (JSON lines). */
  socket: string;
  /** The daemon's record: pid, config, start time (JSON). */
  record: string;
  /** The daemon's log (its stdout and stderr). */
  log: string;
}

export function vmRunFiles(name: string, dir = runDir()): VmRunFiles {
  return {
    socket: join(dir, `${name}.sock`),
    record: join(dir, `${name}.json`),
    log: join(dir, `${name}.log`),
  };
}
