/**
 * Automatic re-protection (`--reprotect HOST[:PORT]`, docs/operations.md
 * "Automatic re-protection"): a side that ends up running its VM alone — a
 * secondary that took over, a primary that lost its secondary — asks for a
 * new secondary at HOST by itself, with the request `colo protect` would
 * send, until one session starts. HOST runs `colo migrate-receive --colo`
 * (it may come up later: a host being repaired); each failed attempt is
 * logged and retried after a back-off of 1 s doubling to 10 s (a host that
 * comes back is noticed within 10 s; a failed connect costs next to nothing).
 *
 * Not re-protected: a VM an operator stopped replicating (`colo failover` on
 * a primary, a destroy), a fenced side, a secondary that stepped down or
 * discarded its copy. A protection started by hand ends the attempts.
 */
import { DEFAULT_MAX_CHECKPOINT_INTERVAL_MS, DEFAULT_MIN_CHECKPOINT_GAP_MS } from "../colo/checkpoint-policy.js";
import { DEFAULT_LEASE_TTL_MS } from "../colo/lease.js";
import { DEFAULT_COMPARE_TIMEOUT_MS } from "../colo/net/comparator.js";
import type { ControlRequest } from "./protocol.js";
import type { Logger } from "./log.js";

export type RemusRequest = Extract<ControlRequest, { op: "remus" }>;

/** First wait after a failed attempt; doubled up to REPROTECT_MAX_BACKOFF_MS. */
export const REPROTECT_FIRST_BACKOFF_MS = 1000;
export const REPROTECT_MAX_BACKOFF_MS = 10_000;

/** What the attempts need of the daemon. */
export interface ReprotectDaemon {
  readonly log: Logger;
  /** "running" when an attempt may go (the takeover's resume may still be under way). */
  vmState(): string;
  /** The session the VM is in now: "primary" (protected), "unprotected" (alone), "fenced", ... or undefined. */
  sessionMode(): string | undefined;
  exiting(): boolean;
  /** Start a session with `request` (the daemon's `remus` request path, exclusive). */
  protect(request: RemusRequest): Promise<unknown>;
}

export interface ReprotectStatus {
  to: string;
  state: "waiting" | "trying" | "protected" | "given-up";
  attempts: number;
  lastError?: string;
  /** Why the attempts began (the failover's reason). */
  after: string;
  /** The session's start, as `colo protect` prints it (checkpoint-0 pause, memory, disk chunks copied). */
  started?: unknown;
}

export class Reprotector {
  private current: { status: ReprotectStatus; cancel: () => void } | undefined;

  constructor(
    private readonly daemon: ReprotectDaemon,
    private readonly sleep: (ms: number, signal: AbortSignal) => Promise<void> = abortableSleep,
  ) {}

  /** The VM runs alone after `reason`: protect it toward `request`'s host until a session starts. A run under way goes on. */
  begin(request: RemusRequest, reason: string): void {
    if (this.current && (this.current.status.state === "waiting" || this.current.status.state === "trying")) return;
    const abort = new AbortController();
    const status: ReprotectStatus = { to: `${request.host}:${request.port}`, state: "waiting", attempts: 0, after: reason };
    this.current = { status, cancel: () => abort.abort() };
    this.daemon.log.info({ to: status.to, after: reason }, "re-protection: asking for a new secondary");
    void this.run(request, status, abort.signal);
  }

  /** No (more) automatic attempts: the operator stopped replication, or the daemon ends. */
  cancel(why: string): void {
    const c = this.current;
    if (!c || (c.status.state !== "waiting" && c.status.state !== "trying")) return;
    c.status.state = "given-up";
    c.status.lastError ??= why;
    c.cancel();
    this.daemon.log.info({ to: c.status.to, why }, "re-protection: no more attempts");
  }

  status(): ReprotectStatus | undefined {
    return this.current ? { ...this.current.status } : undefined;
  }

  private async run(request: RemusRequest, status: ReprotectStatus, signal: AbortSignal): Promise<void> {
    let backoff = REPROTECT_FIRST_BACKOFF_MS;
    let lastLogged: string | undefined;
    while (!signal.aborted) {
      if (this.daemon.exiting()) return this.end(status, "given-up", "the daemon is ending");
      const mode = this.daemon.sessionMode();
      if (mode === "primary") return this.end(status, "protected");
      if (mode === "fenced") return this.end(status, "given-up", "the VM is fenced");
      if (this.daemon.vmState() !== "running") {
        // The takeover's resume (or an operator's pause): wait for the VM to run, no attempt counted.
        await this.sleep(REPROTECT_FIRST_BACKOFF_MS, signal);
        continue;
      }
      status.state = "trying";
      status.attempts++;
      try {
        status.started = await this.daemon.protect(request);
        this.daemon.log.info({ to: status.to, attempts: status.attempts }, "re-protection: the VM is protected again");
        return this.end(status, "protected");
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        status.lastError = message;
        status.state = "waiting";
        // One log line per distinct error: a host down for an hour is one line, not 120.
        if (message !== lastLogged) this.daemon.log.warn({ to: status.to, attempt: status.attempts, retryInMs: backoff, err: message }, "re-protection: attempt failed");
        lastLogged = message;
      }
      await this.sleep(backoff, signal);
      backoff = Math.min(backoff * 2, REPROTECT_MAX_BACKOFF_MS);
    }
  }

  private end(status: ReprotectStatus, state: "protected" | "given-up", why?: string): void {
    status.state = state;
    if (why !== undefined) status.lastError = why;
  }
}

/** A timer (monotonic: libuv's) that an abort cuts short. */
function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

/** What a survivor's request takes where a secondary knows nothing of the primary's options: `colo protect`'s defaults. */
const SURVIVOR_DEFAULTS = {
  intervalMs: 100,
  compareTimeoutMs: DEFAULT_COMPARE_TIMEOUT_MS,
  minGapMs: DEFAULT_MIN_CHECKPOINT_GAP_MS,
  maxIntervalMs: DEFAULT_MAX_CHECKPOINT_INTERVAL_MS,
};

/** The request a secondary that took over sends to protect itself again: its own settings, compare options at their defaults. */
export function survivorRequest(
  mode: "remus" | "compare",
  s: { keyFile: string; timeoutMs: number; heartbeatMs: number; arbiter?: string; leaseMs?: number; reprotect: { host: string; port: number; configPath?: string } },
  defaults: { intervalMs: number; compareTimeoutMs: number; minGapMs: number; maxIntervalMs: number } = SURVIVOR_DEFAULTS,
): RemusRequest {
  return {
    op: "remus",
    mode,
    host: s.reprotect.host,
    port: s.reprotect.port,
    keyFile: s.keyFile,
    intervalMs: mode === "remus" ? defaults.intervalMs : Math.min(defaults.maxIntervalMs, 3_600_000),
    timeoutMs: s.timeoutMs,
    heartbeatMs: s.heartbeatMs,
    ...(mode === "compare" ? { compareTimeoutMs: defaults.compareTimeoutMs, minGapMs: defaults.minGapMs, maxIntervalMs: defaults.maxIntervalMs } : {}),
    ...(s.reprotect.configPath ? { configPath: s.reprotect.configPath } : {}),
    ...(s.arbiter ? { arbiter: s.arbiter, leaseMs: s.leaseMs ?? DEFAULT_LEASE_TTL_MS } : {}),
    reprotect: s.reprotect,
  };
}

/** A primary's next request after losing its secondary: the same session settings toward the reprotect host. */
export function nextPrimaryRequest(r: RemusRequest): RemusRequest | undefined {
  if (!r.reprotect) return undefined;
  // The config the next secondary runs: --reprotect-config, else the one the lost secondary ran.
  const configPath = r.reprotect.configPath ?? r.configPath;
  const next: RemusRequest = { ...r, host: r.reprotect.host, port: r.reprotect.port };
  if (configPath) next.configPath = configPath;
  return next;
}
