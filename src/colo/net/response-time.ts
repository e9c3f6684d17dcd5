/**
 * How long a guest takes to answer, seen at its NIC (issue 15's profile of
 * a protected request): per TCP connection, from the first segment with
 * data that reached the guest while nothing was unanswered, to the guest's
 * next segment with data on that connection. On the primary that is the
 * PVM's part of a request (frames in at the TAP, out of the engine); on
 * the secondary the SVM's (mirrored frames delivered, its output). With
 * the comparator's `holdMs` (how long a PVM reply waited for the SVM's)
 * it splits what compare mode adds: hold ≈ mirror + SVM response +
 * back channel − PVM response.
 *
 * A connection whose request is never answered keeps its pending start
 * until a reply comes or it is pushed out (at most `maxPending`
 * connections, the oldest dropped). Time is a parameter (pure logic).
 */
import { LatencySamples, type LatencySummary } from "./latency-samples.js";
import { parseFrame } from "./packet.js";

export class ResponseTimer {
  /** Per connection (guest side first), when its unanswered data arrived; the Map's order is arrival. */
  private readonly pending = new Map<string, number>();
  private readonly samples = new LatencySamples(1024);

  constructor(private readonly maxPending = 4096) {}

  /** A frame delivered to the guest. */
  input(frame: Uint8Array, nowMs: number): void {
    const p = parseFrame(frame);
    if (p.kind !== "tcp" || p.tcp.payload.length === 0) return;
    const key = `${p.ip.dstText}:${p.tcp.dstPort}|${p.ip.srcText}:${p.tcp.srcPort}`;
    if (this.pending.has(key)) return;
    this.pending.set(key, nowMs);
    if (this.pending.size > this.maxPending) {
      const oldest = this.pending.keys().next();
      if (!oldest.done) this.pending.delete(oldest.value);
    }
  }

  /** A frame the guest sent. */
  output(frame: Uint8Array, nowMs: number): void {
    const p = parseFrame(frame);
    if (p.kind !== "tcp" || p.tcp.payload.length === 0) return;
    const key = `${p.ip.srcText}:${p.tcp.srcPort}|${p.ip.dstText}:${p.tcp.dstPort}`;
    const since = this.pending.get(key);
    if (since === undefined) return;
    this.pending.delete(key);
    this.samples.record(nowMs - since);
  }

  /** The last 1024 response times (ms). */
  summary(): LatencySummary {
    return this.samples.summary();
  }
}
