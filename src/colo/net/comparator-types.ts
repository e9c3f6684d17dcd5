/**
 * The comparator's public vocabulary: the divergences it reports, what a
 * call returns, its options with their defaults, and its statistics.
 * comparator.ts re-exports all of it; import from there.
 */
import type { LatencySummary } from "./latency-samples.js";
export type DivergenceReason = "payload" | "length" | "timeout" | "overflow" | "secondary-extra";

export const DIVERGENCE_REASONS: readonly DivergenceReason[] = ["payload", "length", "timeout", "overflow", "secondary-extra"];

export interface Divergence {
  reason: DivergenceReason;
  /** Names the flow and the place, e.g. "tcp 10.77.0.10:6379>10.77.0.2:41000 at seq+1234: ...". */
  detail: string;
  /** The flow, as the detail names it ("tcp 10.77.0.10:6379>10.77.0.2:41000": protocol, addresses, ports); absent for a frame held for a checkpoint. */
  flow?: string;
  /** Where in the flow: TCP, sequence units from the PVM's ISN (the detail's "seq+N"); a datagram, the first octet that differs. */
  offset?: number;
  /** TCP whose ISN the comparator has not seen: the sequence number instead (the detail's "at seq N"). */
  seq?: number;
}

/** Where a divergence happened, beside its detail text. */
export type Place = Pick<Divergence, "flow" | "offset" | "seq">;

export interface CompareResult {
  /** PVM frames that may now go to the LAN, in release order. */
  release: Uint8Array[];
  divergence?: Divergence;
}

export interface ComparatorOptions {
  compareTimeoutMs: number;
  maxHeldFrames: number;
  maxHeldBytes: number;
  maxSecondaryBytes: number;
  /** Flow table size; idle flows are evicted first. */
  maxFlows?: number;
}

export interface ComparatorStats {
  heldFrames: number;
  heldBytes: number;
  secondaryQueuedBytes: number;
  flows: number;
  /** PVM frames released because the SVM produced the same output. */
  releasedMatched: number;
  /** PVM frames released without comparison: non-IP, and TCP retransmissions below the watermark. */
  releasedUncompared: number;
  releasedAtCheckpoint: number;
  releasedAtFailover: number;
  /** SVM frames dropped: after a divergence, past maxSecondaryBytes, or with the flow table full. */
  droppedSecondary: number;
  /** SVM frames not compared: non-IP. */
  ignoredSecondary: number;
  /** PVM frames dropped past twice the held limits. */
  droppedPrimaryOverflow: number;
  flowsEvicted: number;
  divergences: Record<DivergenceReason, number>;
  /**
   * How long the last (up to 1024) frames released by compare were held:
   * from the PVM's frame to the SVM's matching output (the SVM's lag, what
   * compare mode adds to a reply). Milliseconds.
   */
  holdMs: LatencySummary;
}

/**
 * QEMU's colo-compare default for `compare_timeout` (net/colo-compare.c,
 * DEFAULT_TIME_OUT_MS = 3000). Kept: it is well above Linux's initial TCP RTO
 * of 1 s (RFC 6298), so an SVM a little behind the PVM (scheduling, a slower
 * host) does not cost a checkpoint, while a silently diverged SVM holds
 * output back for at most a few seconds.
 */
export const DEFAULT_COMPARE_TIMEOUT_MS = 3000;
/** About one full TCP window of small segments for a handful of connections (QEMU: 1024 per connection). */
export const DEFAULT_MAX_HELD_FRAMES = 4096;
/** 8 MiB: ~65 ms of output at 1 Gbit/s; a checkpoint is due long before. */
export const DEFAULT_MAX_HELD_BYTES = 8 * 2 ** 20;
/** 8 MiB of SVM output not yet matched by the PVM. */
export const DEFAULT_MAX_SECONDARY_BYTES = 8 * 2 ** 20;
/** Flows remembered (idle ones are evicted first; per-flow state is a few hundred octets). */
export const DEFAULT_MAX_FLOWS = 8192;
/** PVM frames beyond this multiple of the held limits are dropped. */
export const HARD_CAP_FACTOR = 2;

export const DEFAULT_COMPARATOR_OPTIONS: Readonly<Required<ComparatorOptions>> = {
  compareTimeoutMs: DEFAULT_COMPARE_TIMEOUT_MS,
  maxHeldFrames: DEFAULT_MAX_HELD_FRAMES,
  maxHeldBytes: DEFAULT_MAX_HELD_BYTES,
  maxSecondaryBytes: DEFAULT_MAX_SECONDARY_BYTES,
  maxFlows: DEFAULT_MAX_FLOWS,
};

export function zeroDivergences(): Record<DivergenceReason, number> {
  return { payload: 0, length: 0, timeout: 0, overflow: 0, "secondary-extra": 0 };
}
