/**
 * One `colo check` verdict and the figures it was made on (check-rules.ts
 * makes them, the CLI prints them as lines or JSON), and the formatting of
 * sizes and rates the lines share.
 */

/** ok: passes; warn: passes, with something to know (exit 0); fail: protection would fail or not protect (exit 1). */
export type CheckStatus = "ok" | "warn" | "fail";

export const CHECK_NAMES = [
  "key",
  "vm",
  "config",
  "peer",
  "receiver",
  "engine",
  "memory",
  "disks",
  "files",
  "host-memory",
  "shm",
  "spill-space",
  "bridge",
  "bandwidth",
  "arbiter",
] as const;
export type CheckName = (typeof CHECK_NAMES)[number];

export interface CheckResult {
  name: CheckName;
  status: CheckStatus;
  /** One line: what was found, with the figures. */
  detail: string;
  /** For a failure (or a warning): what to do. */
  fix?: string;
  /** The figures the verdict was made on, for --json (numbers in bytes, ms, pages). */
  figures: Record<string, unknown>;
}

export function result(name: CheckName, status: CheckStatus, detail: string, figures: Record<string, unknown> = {}, fix?: string): CheckResult {
  return { name, status, detail, ...(fix === undefined ? {} : { fix }), figures };
}

export const ok = (name: CheckName, detail: string, figures: Record<string, unknown> = {}): CheckResult => result(name, "ok", detail, figures);
export const warn = (name: CheckName, detail: string, fix: string, figures: Record<string, unknown> = {}): CheckResult => result(name, "warn", detail, figures, fix);
export const fail = (name: CheckName, detail: string, fix: string, figures: Record<string, unknown> = {}): CheckResult => result(name, "fail", detail, figures, fix);

/** Octets as "512 B", "64.0 MiB", "3.2 GiB". */
export function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 2 ** 20) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 2 ** 30) return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}

/** Octets per second as megabits per second ("940 Mbit/s", "12.5 Mbit/s"). */
export function mbit(bytesPerSec: number): string {
  const m = (bytesPerSec * 8) / 1e6;
  return `${m >= 100 ? m.toFixed(0) : m.toFixed(1)} Mbit/s`;
}

/** One printed line: status, name, detail, and for a failure or warning what to do. */
export function formatResult(r: CheckResult): string {
  const status = r.status === "fail" ? "FAIL" : r.status;
  return `${status.padEnd(4)} ${r.name.padEnd(11)} ${r.detail}${r.fix ? ` -- ${r.fix}` : ""}`;
}
