/**
 * One fault-suite run's record and the suite's summary (written to
 * bench/results/faults-*.json; bench/report.ts reads them).
 */
import type { FaultKind } from "./fault-inject.js";
import type { WireCounts } from "./wire-watch.js";

/** What the LAN saw (test/faults/wire-watch.ts). */
export interface WireResult {
  /** Frames with the guest's MAC from each host, from protection to the fault. */
  beforeFault: WireCounts;
  /** From 500 ms after the fault ended to the run's end. */
  afterFault: WireCounts;
  /** Who sent the guest's frames after the fault: exactly one host, or "both" (split brain) or "none". */
  sender: "h1" | "h2" | "both" | "none";
}

export interface VerifySummary {
  acknowledged: number;
  verified: number;
  lostCount: number;
  unacknowledged: number;
  connectionResets: number;
  maxAckGapMs: number;
  incr: { acknowledged: number; violations: number };
  ok: boolean;
}

export interface RunResult {
  run: number;
  fault: FaultKind;
  /** Who serves the guest at the run's end by the daemons' status: "h1", "h2", "none" or "both". */
  survivor: string;
  outcome: { h1: string; h2: string };
  lostWrites: number;
  incrViolations: number;
  acknowledged: number;
  /** Commands the client saw acknowledged before the fault was injected (its last progress line then). */
  ackedBeforeFault: number;
  /** Commands acknowledged after the fault: counted from a progress line printed after the fault ended. */
  ackedAfterFault: number;
  connectionResets: number;
  /** The guest's frames came from both hosts after the fault (the wire's verdict). */
  splitBrain: boolean;
  /** What the LAN saw; absent when the run failed before the watch started. */
  wire?: WireResult;
  /** The longest each daemon's event loop ran late before the fault (status eventLoopDelay.maxMs; -1: not reported). */
  loopDelayMaxMs: { h1: number; h2: number };
  /** Polls at which both daemons said they were live (recorded, not judged: see the file's comment). */
  statusOverlapPolls: number;
  failoverMs: number;
  /** kill-primary-mid-checkpoint only: whether the kill landed inside a checkpoint. */
  midCheckpoint?: MidCheckpoint;
  ms: number;
  /** Why the run failed before its checks (an exception, no survivor, a missed mid-checkpoint kill). */
  error?: string;
}

export interface MidCheckpoint {
  /** The survivor (the secondary) had a checkpoint begun and not applied when the primary died. */
  hit: boolean;
  /** The survivor's `discardedCheckpoints` after the takeover; null when it did not answer. */
  discardedCheckpoints: number | null;
  /** The primary was seen paused (inside a checkpoint) at some point before the kill. */
  pausedSeen: boolean;
  /** Operator checkpoints asked for before the kill. */
  checkpointRequests: number;
}

export interface SuiteSummary {
  /** Runs done and counted. */
  runs: number;
  /** Set when the suite was interrupted (SIGINT/SIGTERM) before all the runs asked for: how many were asked. */
  requestedRuns?: number;
  interrupted?: boolean;
  seed: number;
  faultsByKind: Record<string, number>;
  acknowledgedWrites: number;
  lostWrites: number;
  incrViolations: number;
  connectionResets: number;
  splitBrains: number;
  /** Runs with any failure (test/faults/run-checks.ts runFailures). */
  failedRuns: number;
  failoverMs: { min: number; p50: number; p90: number; p99?: number; max: number } | undefined;
  /** The longest any daemon's event loop ran late before a fault, over all runs (ms; -1: none reported). */
  loopDelayMaxMs: number;
  details: RunResult[];
}


/** A run's record before anything happened. */
export function blankResult(run: number, fault: FaultKind): RunResult {
  return {
    run,
    fault,
    survivor: "none",
    outcome: { h1: "?", h2: "?" },
    lostWrites: 0,
    incrViolations: 0,
    acknowledged: 0,
    ackedBeforeFault: 0,
    ackedAfterFault: 0,
    connectionResets: 0,
    splitBrain: false,
    statusOverlapPolls: 0,
    loopDelayMaxMs: { h1: -1, h2: -1 },
    failoverMs: 0,
    ms: 0,
  };
}

/** Adds to the run's error (a run may fail in more than one way). */
export function addError(r: RunResult, message: string): void {
  r.error = r.error === undefined ? message : `${r.error}; ${message}`;
}
