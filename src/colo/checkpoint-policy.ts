/**
 * When the primary takes a checkpoint (COLO-PROTOCOL.md §4 step 1): policy
 * only, no mechanism. Reasons come from the proxy (the VMs' output
 * differs, or the SVM's is missing past the compare timeout, or a queue is
 * full), the disk (the primary's backlog of forwarded writes, or the
 * secondary's of overlay and pending writes, which it reports), the clock
 * (the maximum interval) or the operator. Two rules keep it sane:
 *
 * - at most one checkpoint per `minGapMs` (a guest whose every reply
 *   differs, e.g. one that serves TIME, must not checkpoint back to back
 *   and starve itself: its output waits, held, for the next slot);
 * - at least one per `maxIntervalMs` in compare mode, so the SVM's
 *   dirty-page set (sent back at the next checkpoint) stays bounded.
 *
 * Remus mode is the degenerate case: every `intervalMs`, reason "periodic".
 *
 * Pure: every `nowMs` is the caller's monotonic clock (src/sys/clock.ts).
 */

export type CheckpointReason =
  | "payload"
  | "length"
  | "timeout"
  | "overflow"
  | "secondary-extra"
  | "disk-backlog"
  | "secondary-disk-backlog"
  | "periodic"
  | "operator";

export const CHECKPOINT_REASONS: readonly CheckpointReason[] = [
  "payload",
  "length",
  "timeout",
  "overflow",
  "secondary-extra",
  "disk-backlog",
  "secondary-disk-backlog",
  "periodic",
  "operator",
];

/** QEMU's x-checkpoint-delay default (migration/options.c: DEFAULT_MIGRATE_X_CHECKPOINT_DELAY, 200 * 100 ms). */
export const DEFAULT_MAX_CHECKPOINT_INTERVAL_MS = 20_000;
/** A checkpoint costs 40-100 ms here (bench/README.md): at most ~5 per second keeps the guest running at least half the time. */
export const DEFAULT_MIN_CHECKPOINT_GAP_MS = 100;

export interface CheckpointPolicyOptions {
  minGapMs: number;
  maxIntervalMs: number;
}

export class CheckpointPolicy {
  private lastCheckpointAt: number;
  private pending: CheckpointReason | undefined;
  readonly counts: Record<CheckpointReason, number> = {
    payload: 0,
    length: 0,
    timeout: 0,
    overflow: 0,
    "secondary-extra": 0,
    "disk-backlog": 0,
    "secondary-disk-backlog": 0,
    periodic: 0,
    operator: 0,
  };

  constructor(
    private readonly opts: CheckpointPolicyOptions,
    nowMs: number,
  ) {
    if (!(opts.minGapMs >= 0) || !(opts.maxIntervalMs > 0)) throw new RangeError(`bad checkpoint policy: min gap ${opts.minGapMs} ms, max interval ${opts.maxIntervalMs} ms`);
    this.lastCheckpointAt = nowMs;
  }

  /** Something asks for a checkpoint; the first reason since the last checkpoint is the one counted. */
  request(reason: CheckpointReason): void {
    if (this.pending === undefined) this.pending = reason;
  }

  get requested(): CheckpointReason | undefined {
    return this.pending;
  }

  /**
   * What to do now: a reason to checkpoint at once, or the time in ms after
   * which to ask again.
   */
  decide(nowMs: number): { checkpoint: CheckpointReason } | { waitMs: number } {
    const sinceLast = nowMs - this.lastCheckpointAt;
    if (this.pending !== undefined) {
      if (sinceLast >= this.opts.minGapMs) return { checkpoint: this.pending };
      return { waitMs: this.opts.minGapMs - sinceLast };
    }
    if (sinceLast >= this.opts.maxIntervalMs) return { checkpoint: "periodic" };
    return { waitMs: this.opts.maxIntervalMs - sinceLast };
  }

  /** Count intervals from `nowMs` (checkpoint 0, which is no policy decision, completed). */
  restart(nowMs: number): void {
    this.pending = undefined;
    this.lastCheckpointAt = nowMs;
  }

  /**
   * The checkpoint that serves the pending request has fixed its content
   * (the PVM paused, its output sealed): a request from here on asks for the
   * next one, and is kept through this one's done().
   */
  sealed(): void {
    this.pending = undefined;
  }

  /** A checkpoint for `reason` has completed at `nowMs`; a request made after its seal() stays pending. */
  done(reason: CheckpointReason, nowMs: number): void {
    this.counts[reason]++;
    this.lastCheckpointAt = nowMs;
  }
}
