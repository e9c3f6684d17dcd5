import { pino, type Logger } from "pino";

/**
 * Structured logs (JSON lines) for daemons, through pino: fast, well kept,
 * and its JSON lines are what log collectors ingest (docs/dependencies.md).
 * Daemons write to stderr, which `colo create` points at the VM's log file.
 */
export function daemonLogger(vm: string): Logger {
  return pino({ base: { vm, pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: 2, sync: true }));
}

export type { Logger };
