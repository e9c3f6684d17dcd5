/** Messages a freshly spawned VM daemon sends to `colo create` over the IPC channel. */
export type DaemonReport =
  | { type: "ready"; line: string; bootMs: number }
  | { type: "failed"; error: string; consoleTail: string }
  /** An incoming-migration daemon is listening. */
  | { type: "listening"; host: string; port: number }
  /** Progress of an incoming migration (a TransferProgress). */
  | { type: "progress"; progress: unknown };

export function isDaemonReport(value: unknown): value is DaemonReport {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  if (v.type === "ready") return typeof v.line === "string" && typeof v.bootMs === "number";
  if (v.type === "failed") return typeof v.error === "string" && typeof v.consoleTail === "string";
  if (v.type === "listening") return typeof v.host === "string" && typeof v.port === "number";
  if (v.type === "progress") return typeof v.progress === "object" && v.progress !== null;
  return false;
}

/** Sends a report to the parent (`colo create`, ...) while it still listens. */
export function reportToParent(msg: DaemonReport): void {
  if (process.send && process.connected) process.send(msg);
}
