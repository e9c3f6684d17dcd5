/** What `colo status` shows of a replication session (issue 4, part 5), and what it tells observers (the daemon's metrics). */
import { monotonicMs } from "../sys/clock.js";
import type { Divergence } from "./net/comparator.js";

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

/** A completed checkpoint, as `recentCheckpoints` shows it. */
export interface CheckpointRecord {
  /** Its number: 0 is the initial sync (a primary's; a secondary's first applied is 1). */
  checkpoint: number;
  /** Primary: why it was taken (checkpoint-policy.ts; "initial" for checkpoint 0). A secondary is not told. */
  reason?: string;
  pauseMs: number;
  /** Primary: from the pause until the secondary applied it (SVM_READY) and the held output left; the PVM runs from `pauseMs` on. */
  commitMs?: number;
  pages: number;
  bytes: number;
  /** When it completed: an instant for the operator (wall clock, ISO 8601). */
  at: string;
  /** The divergence that asked for it (compare mode: payload, length, timeout, overflow, secondary-extra): flow and place. */
  divergence?: Divergence;
}

/** What a checkpoint's recorder gives (primary.ts, secondary.ts). */
export interface CheckpointDone {
  /** Its number, when the recorder's count differs from this one's (a secondary's starts after checkpoint 0). */
  checkpoint?: number;
  pauseMs: number;
  /** Primary: how long the engine's vCPUs stood still in that pause, as the engine timed it (Engine.lastStoppedMs). */
  engineStoppedMs?: number;
  /** Primary: pause to SVM_READY (the PVM resumed before it, at `pauseMs`). */
  commitMs?: number;
  pages: number;
  bytes: number;
  reason?: string;
  /** Where the checkpoint went, ms by phase (`lastPauseBreakdownMs`): `new` and `svmSuspended` before the pause (the PVM runs), then the pause's phases and what follows it. */
  phasesMs?: Record<string, number>;
  divergence?: Divergence;
}

/** Told as things happen (the daemon's metrics, src/api/metrics.ts). */
export interface ReplicationObserver {
  checkpoint?(record: CheckpointRecord, phasesMs: Record<string, number> | undefined): void;
  failover?(event: FailoverEvent, mode: ReplicationMode): void;
}

/** Checkpoints kept for `recentCheckpoints`. */
export const RECENT_CHECKPOINTS = 20;

export class ReplicationStats {
  mode: ReplicationMode;
  peer: string;
  checkpoints = 0;
  lastPauseMs = 0;
  /** The last checkpoint's Engine.lastStoppedMs, when the engine knew it. */
  lastEngineStoppedMs: number | undefined;
  private readonly pauses: number[] = [];
  /** Primary: the last checkpoints' commit times (pause to SVM_READY), as `pauses`. */
  private readonly commits: number[] = [];
  lastCommitMs: number | undefined;
  lastPages = 0;
  /** Where the last checkpoint went, in ms (primary): new, svmSuspended (the PVM running), pause, pvmDirty, pages, saveState, resume (the PVM runs again), send, svmReady (the secondary applied it). */
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

  /** The last checkpoints, oldest first; `completedAt` on the monotonic clock (shown as `msAgo`). */
  private readonly recent: { record: CheckpointRecord; completedAt: number }[] = [];
  private readonly observers = new Set<ReplicationObserver>();

  /** `observer` is told of each checkpoint and failover from now on; returns its unsubscribe. */
  observe(observer: ReplicationObserver): () => void {
    this.observers.add(observer);
    return () => this.observers.delete(observer);
  }

  recordCheckpoint(done: CheckpointDone): void {
    const { pauseMs, pages, bytes } = done;
    const record: CheckpointRecord = {
      checkpoint: done.checkpoint ?? this.checkpoints,
      ...(done.reason !== undefined ? { reason: done.reason } : {}),
      pauseMs,
      ...(done.commitMs !== undefined ? { commitMs: done.commitMs } : {}),
      pages,
      bytes,
      // Wall clock: an instant the operator reads, never compared with another.
      at: new Date().toISOString(),
      ...(done.divergence ? { divergence: done.divergence } : {}),
    };
    this.checkpoints++;
    this.lastPauseMs = pauseMs;
    this.lastPages = pages;
    this.lastBytes = bytes;
    if (done.phasesMs) this.lastBreakdownMs = done.phasesMs;
    this.lastEngineStoppedMs = done.engineStoppedMs;
    this.pauses.push(pauseMs);
    if (this.pauses.length > 1000) this.pauses.shift();
    if (done.commitMs !== undefined) {
      this.lastCommitMs = done.commitMs;
      this.commits.push(done.commitMs);
      if (this.commits.length > 1000) this.commits.shift();
    }
    this.recent.push({ record, completedAt: monotonicMs() });
    if (this.recent.length > RECENT_CHECKPOINTS) this.recent.shift();
    for (const o of this.observers) o.checkpoint?.(record, done.phasesMs);
  }

  heard(): void {
    this.lastHeardAt = monotonicMs();
  }

  /** Over the last 1000 checkpoints. */
  p99PauseMs(): number {
    return p99(this.pauses);
  }

  failover(role: "primary" | "secondary", reason: string, mode: ReplicationMode = "unprotected"): void {
    // Wall clock: an instant the operator reads in `colo status`, never compared with another.
    const event: FailoverEvent = { at: new Date().toISOString(), role, reason };
    this.failovers.push(event);
    this.mode = mode;
    for (const o of this.observers) o.failover?.(event, mode);
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

  /** The last RECENT_CHECKPOINTS checkpoints, oldest first, each with how long ago it completed. */
  recentCheckpoints(): (CheckpointRecord & { msAgo: number })[] {
    const now = monotonicMs();
    return this.recent.map((r) => ({ ...r.record, msAgo: Math.round(now - r.completedAt) }));
  }

  snapshot(): Record<string, unknown> {
    return {
      mode: this.mode,
      replication: this.replication,
      peer: this.peer,
      checkpoints: this.checkpoints,
      lastPauseMs: this.lastPauseMs,
      ...(this.lastEngineStoppedMs !== undefined ? { lastEngineStoppedMs: this.lastEngineStoppedMs } : {}),
      p99PauseMs: this.p99PauseMs(),
      ...(this.lastCommitMs !== undefined ? { lastCommitMs: this.lastCommitMs, p99CommitMs: p99(this.commits) } : {}),
      pagesPerCheckpoint: this.lastPages,
      bytesPerCheckpoint: this.lastBytes,
      msSinceHeard: Math.round(monotonicMs() - this.lastHeardAt),
      failovers: this.failovers,
      discardedCheckpoints: this.discardedCheckpoints,
      ...(this.reasons ? { checkpointReasons: { ...this.reasons } } : {}),
      ...(this.lease ? { lease: this.lease() } : {}),
      ...(this.lastBreakdownMs ? { lastPauseBreakdownMs: this.lastBreakdownMs } : {}),
      recentCheckpoints: this.recentCheckpoints(),
      ...(this.fenceFailed ? { fenceFailed: this.fenceFailed } : {}),
      ...(this.resumeFailed ? { resumeFailed: this.resumeFailed } : {}),
    };
  }
}

function p99(values: readonly number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))] ?? 0;
}
