/** What `colo status` shows of a replication session (issue 4, part 5). */
import { monotonicMs } from "../sys/clock.js";

/**
 * unprotected: running alone (after a failover, or a session's end);
 * fenced: stopped releasing output (paused) because it may not act alone:
 * it lost its peer and could not hold the arbiter's lease (lease.ts);
 * stepped-down: a secondary that did not take over because its primary
 * still holds the lease (only the link was lost), or because this side
 * failed (a local failure: its engine, VM or disk).
 */
export type ReplicationMode = "primary" | "secondary" | "unprotected" | "fenced" | "stepped-down" | "handed-over";

export interface FailoverEvent {
  /** When it happened: an instant for the operator (wall clock, ISO 8601). */
  at: string;
  role: "primary" | "secondary";
  reason: string;
}

export class ReplicationStats {
  mode: ReplicationMode;
  peer: string;
  checkpoints = 0;
  lastPauseMs = 0;
  private readonly pauses: number[] = [];
  lastPages = 0;
  /** Where the last checkpoint's pause went, in ms (primary): pause, pvmDirty, svmSuspended, pages, saveState, send, svmReady, resume. */
  lastBreakdownMs: Record<string, number> | undefined;
  lastBytes = 0;
  /** When the peer was last heard (monotonic clock: only `msSinceHeard` is shown). */
  private lastHeardAt = monotonicMs();
  readonly failovers: FailoverEvent[] = [];
  /** Secondary: checkpoints received in part when the primary was lost, and never applied. */
  discardedCheckpoints = 0;

  /** Checkpoints by reason (the primary's policy counters; checkpoint 0 not included). */
  reasons: Record<string, number> | undefined;

  constructor(
    mode: ReplicationMode,
    peer: string,
    /** Remus (SVM paused, output held per checkpoint) or COLO compare mode. */
    public replication: "remus" | "compare" = "remus",
  ) {
    this.mode = mode;
    this.peer = peer;
  }

  recordCheckpoint(pauseMs: number, pages: number, bytes: number): void {
    this.checkpoints++;
    this.lastPauseMs = pauseMs;
    this.lastPages = pages;
    this.lastBytes = bytes;
    this.pauses.push(pauseMs);
    if (this.pauses.length > 1000) this.pauses.shift();
  }

  heard(): void {
    this.lastHeardAt = monotonicMs();
  }

  p99PauseMs(): number {
    if (this.pauses.length === 0) return 0;
    const sorted = [...this.pauses].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))] ?? 0;
  }

  failover(role: "primary" | "secondary", reason: string, mode: ReplicationMode = "unprotected"): void {
    // Wall clock: an instant the operator reads in `colo status`, never compared with another.
    this.failovers.push({ at: new Date().toISOString(), role, reason });
    this.mode = mode;
  }

  /** Arbiter lease state, when an arbiter is configured. */
  lease: (() => Record<string, unknown>) | undefined;

  /** This side's fence could not pause the VM (its output is dropped, but it may run): the daemon ends the VM. */
  fenceFailed: { at: string; error: string } | undefined;
  /** A resume failed (after a checkpoint, or running on unprotected): the daemon ends the VM. */
  resumeFailed: { at: string; after: string; error: string } | undefined;

  /** A fence's pause or a resume failed: shown until the daemon, which ends the VM for it, exits. */
  sideFailed(what: "fence", error: string): void;
  sideFailed(what: "resume", error: string, after: string): void;
  sideFailed(what: "fence" | "resume", error: string, after = ""): void {
    const at = new Date().toISOString();
    if (what === "fence") this.fenceFailed = { at, error };
    else this.resumeFailed = { at, after, error };
  }

  snapshot(): Record<string, unknown> {
    return {
      mode: this.mode,
      replication: this.replication,
      peer: this.peer,
      checkpoints: this.checkpoints,
      lastPauseMs: this.lastPauseMs,
      p99PauseMs: this.p99PauseMs(),
      pagesPerCheckpoint: this.lastPages,
      bytesPerCheckpoint: this.lastBytes,
      msSinceHeard: Math.round(monotonicMs() - this.lastHeardAt),
      failovers: this.failovers,
      discardedCheckpoints: this.discardedCheckpoints,
      ...(this.reasons ? { checkpointReasons: { ...this.reasons } } : {}),
      ...(this.lease ? { lease: this.lease() } : {}),
      ...(this.lastBreakdownMs ? { lastPauseBreakdownMs: this.lastBreakdownMs } : {}),
      ...(this.fenceFailed ? { fenceFailed: this.fenceFailed } : {}),
      ...(this.resumeFailed ? { resumeFailed: this.resumeFailed } : {}),
    };
  }
}
