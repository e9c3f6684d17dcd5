/**
 * The SVM's recent TCP output, kept on the secondary for its takeover.
 *
 * In compare mode the SVM's frames go only to the primary's comparator; the
 * SVM's guest believes them sent. When the primary dies, the replies it
 * held (waiting for the SVM's match) die with it, and the survivor's guest
 * sends them again only when its own retransmission timer fires: 200 ms
 * after the first send, then 400, 800 ms more (RFC 6298 backoff), so a
 * takeover that lands at 700 ms waits until ~1400 ms for it. Sent again at
 * the takeover instead, the client gets them at once.
 *
 * What is sent again is the SVM's own output since its state last changed
 * (the last checkpoint it applied: `clear()` then), i.e. what its TCP
 * would retransmit itself: the guest's current state agrees with it. A
 * client that already had a segment (the primary released the PVM's copy,
 * equal byte for byte) drops the duplicate and acknowledges. Only TCP
 * segments carrying data or FIN are kept (a duplicate UDP datagram would be
 * delivered twice; a pure ACK carries nothing the guest would resend), the
 * last `perFlow` of each connection, at most `maxFlows` connections (the
 * oldest dropped first) and `maxBytes` in all.
 */
import { parseFrame } from "./packet.js";

export interface RecentOutputLimits {
  perFlow: number;
  maxFlows: number;
  maxBytes: number;
}

export const DEFAULT_RECENT_OUTPUT_LIMITS: RecentOutputLimits = { perFlow: 8, maxFlows: 4096, maxBytes: 4 << 20 };

export class RecentTcpOutput {
  /** Per connection (its 4-tuple), its last data or FIN segments, oldest first; the Map's order is each flow's last send. */
  private readonly flows = new Map<string, Uint8Array[]>();
  private bytes = 0;

  constructor(private readonly limits: RecentOutputLimits = DEFAULT_RECENT_OUTPUT_LIMITS) {}

  /** A frame the SVM sent (as the guest made it: before any rewriting). */
  record(frame: Uint8Array): void {
    const p = parseFrame(frame);
    if (p.kind !== "tcp") return;
    const { tcp, ip } = p;
    if (tcp.payload.length === 0 && !tcp.flags.fin) return;
    if (tcp.flags.rst || tcp.flags.syn) return;
    const key = `${ip.srcText}:${tcp.srcPort}>${ip.dstText}:${tcp.dstPort}`;
    const list = this.flows.get(key) ?? [];
    this.flows.delete(key); // re-inserted last: the Map's order is the flows' recency
    list.push(Uint8Array.from(frame));
    this.bytes += frame.length;
    while (list.length > this.limits.perFlow) this.bytes -= list.shift()?.length ?? 0;
    this.flows.set(key, list);
    while (this.flows.size > this.limits.maxFlows || (this.bytes > this.limits.maxBytes && this.flows.size > 1)) this.dropOldestFlow();
  }

  /** The SVM's state was replaced (a checkpoint applied): what it sent before no longer follows from it. */
  clear(): void {
    this.flows.clear();
    this.bytes = 0;
  }

  /** Every kept segment, each connection's in the order sent, the least recent connection first; the store is emptied. */
  take(): Uint8Array[] {
    const out = [...this.flows.values()].flat();
    this.clear();
    return out;
  }

  stats(): { flows: number; frames: number; bytes: number } {
    let frames = 0;
    for (const l of this.flows.values()) frames += l.length;
    return { flows: this.flows.size, frames, bytes: this.bytes };
  }

  private dropOldestFlow(): void {
    const first = this.flows.keys().next();
    if (first.done) return;
    for (const f of this.flows.get(first.value) ?? []) this.bytes -= f.length;
    this.flows.delete(first.value);
  }
}
