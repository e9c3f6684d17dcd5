// What the verifying client reports (verifying-client.ts): one
// acknowledgement, a lost write, the run's statistics, the summary after
// verification (the JSON the CLI prints) and the progress line's numbers.
import type { IncrSummary } from "./incr-check.js";

/** One acknowledged command (for inspection; stored compactly inside). */
export type AckRecord =
  | { op: "SET"; conn: number; key: string; value: string; atMs: number }
  | { op: "INCR"; conn: number; key: string; value: number; atMs: number };

export interface LostWrite {
  key: string;
  expected: string;
  got: string | null;
}

/** What the run saw. `acknowledged`/`unacknowledged` count SETs; INCRs are in `incr` after verify. */
export interface RunStats {
  prefix: string;
  connections: number;
  durationMs: number;
  acknowledged: number;
  unacknowledged: number;
  /** Error replies (`-ERR`, `-LOADING`, ...): the command was not applied. */
  errorReplies: number;
  commandTimeouts: number;
  connectionResets: number;
  connectTimeouts: number;
  /** Failed connects other than timeouts (refused, unreachable). */
  connectErrors: number;
  reconnects: number;
  /** Longest time between consecutive acknowledgements (any connection, SET or INCR): the failover as seen by the client. */
  maxAckGapMs: number;
  maxAckGapAtMs: number;
  lastAckAtMs: number | null;
  /** Acknowledgements (SET and INCR) in each 1-second bucket since the start. */
  opsPerSecond: number[];
}

export interface VerifySummary extends RunStats {
  verifiedAgainst: string;
  /** Acknowledged SETs whose value the server still holds. */
  verified: number;
  lostCount: number;
  /** The first 50 lost writes; `lostCount` counts all. */
  lost: LostWrite[];
  incr: IncrSummary;
  /** No lost SET and no INCR violation. */
  ok: boolean;
}

export interface Progress {
  elapsedMs: number;
  /** SET and INCR acknowledgements so far. */
  acknowledgedOps: number;
  opsLastSecond: number;
  unacknowledged: number;
  connectionResets: number;
  commandTimeouts: number;
  reconnects: number;
  connected: number;
}
