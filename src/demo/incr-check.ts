// Checking one connection's INCR counter: the acknowledged values must step by
// exactly 1, except that each unacknowledged INCR in between (lost with its
// connection, maybe applied) may add one more; the final value must be at
// least the last acknowledged one, at most that plus the unacknowledged INCRs
// sent after it. The key is fresh (starts at 0): its prefix is unique per run.

/** One INCR as the client saw it, in the order it was sent. */
export type IncrEvent =
  | { acked: true; value: number; generation: number }
  | { acked: false; generation: number };

export type IncrProblemKind = "went-back" | "gap" | "final-below-acked" | "final-above-sent" | "not-an-integer";

export interface IncrProblem {
  conn: number;
  key: string;
  kind: IncrProblemKind;
  detail: string;
}

export interface IncrKeyResult {
  conn: number;
  key: string;
  acknowledged: number;
  unacknowledged: number;
  /** Connection generations seen (1 + reconnects while INCRs were being sent). */
  generations: number;
  lastAcked: number | null;
  final: number | null;
  ok: boolean;
}

export interface IncrSummary {
  acknowledged: number;
  unacknowledged: number;
  violations: number;
  /** First 50 problems; `violations` counts all. */
  problems: IncrProblem[];
  keys: IncrKeyResult[];
}

export const PROBLEM_LIST_CAP = 50;

/** Checks one counter; `finalRaw` is what GET returned (null: missing, i.e. 0). */
export function checkIncrKey(
  conn: number,
  key: string,
  events: readonly IncrEvent[],
  finalRaw: string | null,
): { result: IncrKeyResult; problems: IncrProblem[] } {
  const problems: IncrProblem[] = [];
  const problem = (kind: IncrProblemKind, detail: string): void => {
    problems.push({ conn, key, kind, detail });
  };
  let previous = 0;
  let previousGeneration = events[0]?.generation ?? 0;
  let unackedSince = 0;
  let acknowledged = 0;
  let lastAcked: number | null = null;
  const generations = new Set<number>();
  for (const e of events) {
    generations.add(e.generation);
    if (!e.acked) {
      unackedSince++;
      continue;
    }
    acknowledged++;
    const reconnected = e.generation !== previousGeneration;
    const highest = previous + 1 + unackedSince;
    if (e.value <= previous) {
      problem("went-back", `acknowledged ${e.value} after acknowledged ${previous}: an acknowledged increment was lost`);
    } else if (e.value > highest) {
      problem(
        "gap",
        `acknowledged ${e.value} after ${previous} with ${unackedSince} unacknowledged INCRs between` +
          `${reconnected ? " (across a reconnect)" : ""}: at most ${highest} possible`,
      );
    }
    previous = e.value;
    previousGeneration = e.generation;
    lastAcked = e.value;
    unackedSince = 0;
  }
  let final: number | null = null;
  if (finalRaw === null) final = 0;
  else if (/^-?\d+$/.test(finalRaw)) final = Number(finalRaw);
  else problem("not-an-integer", `final value ${JSON.stringify(finalRaw)}`);
  if (final !== null) {
    if (final < previous) {
      problem("final-below-acked", `final ${final} < last acknowledged ${previous}: acknowledged increments were lost`);
    } else if (final > previous + unackedSince) {
      problem(
        "final-above-sent",
        `final ${final} > last acknowledged ${previous} + ${unackedSince} unacknowledged INCRs after it`,
      );
    }
  }
  const result: IncrKeyResult = {
    conn,
    key,
    acknowledged,
    unacknowledged: events.length - acknowledged,
    generations: generations.size,
    lastAcked,
    final,
    ok: problems.length === 0,
  };
  return { result, problems };
}

/** Checks every connection's counter and sums up. */
export function checkIncrs(
  counters: readonly { conn: number; key: string; events: readonly IncrEvent[] }[],
  finals: ReadonlyMap<string, string | null>,
): IncrSummary {
  const summary: IncrSummary = { acknowledged: 0, unacknowledged: 0, violations: 0, problems: [], keys: [] };
  for (const c of counters) {
    const { result, problems } = checkIncrKey(c.conn, c.key, c.events, finals.get(c.key) ?? null);
    summary.keys.push(result);
    summary.acknowledged += result.acknowledged;
    summary.unacknowledged += result.unacknowledged;
    summary.violations += problems.length;
    for (const p of problems) if (summary.problems.length < PROBLEM_LIST_CAP) summary.problems.push(p);
  }
  return summary;
}
