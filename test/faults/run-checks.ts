/**
 * What makes one fault-suite run fail (test/faults/fault-suite.ts), and the
 * verifying client's progress as the suite reads it. Pure: unit-tested in
 * run-checks.test.ts.
 */
import type { RunResult } from "./run-result.js";

/** One of the verifying client's progress lines (src/demo/verify-client.ts, stderr, one a second). */
export interface AckReading {
  /** When the line arrived (the caller's clock: the suite passes performance.now()). */
  atMs: number;
  /** Commands (SET and INCR) acknowledged since the client started. */
  acked: number;
}

const PROGRESS = /^verify-client: \d+s acked (\d+) /;

/**
 * The client's acknowledgements over time, from its progress lines. A
 * reading counts what was acknowledged when the client printed it, at most
 * moments before it arrived.
 */
export class AckProgress {
  readonly readings: AckReading[] = [];
  private partial = "";
  private lines: string[] = [];

  feed(chunk: string, nowMs = Date.now()): void {
    const parts = (this.partial + chunk).split("\n");
    this.partial = parts.pop() ?? "";
    for (const line of parts) {
      this.lines.push(line);
      if (this.lines.length > 20) this.lines.shift();
      const m = PROGRESS.exec(line);
      if (m) this.readings.push({ atMs: nowMs, acked: Number(m[1]) });
    }
  }

  /** The latest count (0 before the first reading). */
  latest(): number {
    return this.readings[this.readings.length - 1]?.acked ?? 0;
  }

  /** The first reading that arrived at or after `ms`. */
  firstFrom(ms: number): AckReading | undefined {
    return this.readings.find((r) => r.atMs >= ms);
  }

  /** The client's last stderr lines, for error messages. */
  tail(): string {
    return [...this.lines, this.partial].filter((l) => l !== "").join("\n");
  }
}

/** Why one run failed: empty when it passed. */
export function runFailures(r: RunResult): string[] {
  const out: string[] = [];
  if (r.error !== undefined) out.push(r.error);
  if (r.lostWrites !== 0) out.push(`${r.lostWrites} acknowledged writes lost`);
  if (r.incrViolations !== 0) out.push(`${r.incrViolations} INCR violations`);
  if (r.ackedBeforeFault === 0) out.push("no acknowledged write before the fault");
  if (r.ackedAfterFault === 0) out.push("no acknowledged write after the fault");
  // Records written before the wire watch (no statusOverlapPolls) are judged by their own rules: split brain by
  // status, resets and the wire not judged (bench/report.ts re-reads old results).
  if (r.statusOverlapPolls === undefined) {
    if (r.splitBrain) out.push("split brain: both sides live at one poll (status)");
    return out;
  }
  if (r.connectionResets !== 0) out.push(`${r.connectionResets} connection resets`);
  if (r.survivor === "none") out.push("no side serves the guest after the fault (status)");
  if (r.survivor === "both") out.push("both sides say they are live at the run's end (status)");
  const w = r.wire;
  if (w === undefined) {
    if (r.error === undefined) out.push("the wire was not read");
  } else if (w.sender === "both") {
    out.push(`split brain on the wire: after the fault the guest's frames came from both hosts (h1 ${w.afterFault.h1}, h2 ${w.afterFault.h2})`);
  } else if (w.sender === "none") {
    out.push("no host sent the guest's frames after the fault (wire)");
  } else if ((r.survivor === "h1" || r.survivor === "h2") && w.sender !== r.survivor) {
    out.push(`the wire and the daemons disagree: frames from ${w.sender}, status says ${r.survivor} serves`);
  }
  return out;
}
