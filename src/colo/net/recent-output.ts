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
 * oldest dropped first) and `maxBytes` in all. A connection is forgotten
 * once it is reset (RST either way: `input()` sees the client's) or closed
 * both ways (FIN each way): the TCP rewriter forgets it then too, and a
 * segment of it sent again would leave with the SVM's own numbers.
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
  /** Connections (as in `flows`) whose FIN was seen in one direction: "out" the guest's, "in" the peer's. */
  private readonly finSeen = new Map<string, "out" | "in">();
  private bytes = 0;

  constructor(private readonly limits: RecentOutputLimits = DEFAULT_RECENT_OUTPUT_LIMITS) {}

  /** A frame the SVM sent (as the guest made it: before any rewriting). */
  record(frame: Uint8Array): void {
    const p = parseFrame(frame);
    if (p.kind !== "tcp") return;
    const { tcp, ip } = p;
    const key = `${ip.srcText}:${tcp.srcPort}>${ip.dstText}:${tcp.dstPort}`;
    if (tcp.flags.rst) return this.forget(key);
    if (tcp.payload.length === 0 && !tcp.flags.fin) return;
    if (tcp.flags.syn) return;
    if (tcp.flags.fin && this.closed(key, "out")) return;
    const list = this.flows.get(key) ?? [];
    this.flows.delete(key); // re-inserted last: the Map's order is the flows' recency
    list.push(Uint8Array.from(frame));
    this.bytes += frame.length;
    while (list.length > this.limits.perFlow) this.bytes -= list.shift()?.length ?? 0;
    this.flows.set(key, list);
    while (this.flows.size > this.limits.maxFlows || (this.bytes > this.limits.maxBytes && this.flows.size > 1)) this.dropOldestFlow();
  }

  /** A frame delivered to the SVM (mirrored input): the peer's RST or FIN ends what is kept of its connection. */
  input(frame: Uint8Array): void {
    const p = parseFrame(frame);
    if (p.kind !== "tcp" || (!p.tcp.flags.rst && !p.tcp.flags.fin)) return;
    const key = `${p.ip.dstText}:${p.tcp.dstPort}>${p.ip.srcText}:${p.tcp.srcPort}`;
    if (p.tcp.flags.rst) this.forget(key);
    else this.closed(key, "in");
  }

  /** The SVM's state was replaced (a checkpoint applied): what it sent before no longer follows from it. */
  clear(): void {
    this.flows.clear();
    this.finSeen.clear();
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

  /** A FIN in `way`: true when the other way's was seen already (the connection is forgotten). */
  private closed(key: string, way: "out" | "in"): boolean {
    const seen = this.finSeen.get(key);
    if (seen !== undefined && seen !== way) {
      this.forget(key);
      return true;
    }
    this.finSeen.set(key, way);
    if (this.finSeen.size > this.limits.maxFlows) {
      const oldest = this.finSeen.keys().next();
      if (!oldest.done) this.finSeen.delete(oldest.value);
    }
    return false;
  }

  private forget(key: string): void {
    for (const f of this.flows.get(key) ?? []) this.bytes -= f.length;
    this.flows.delete(key);
    this.finSeen.delete(key);
  }

  private dropOldestFlow(): void {
    const first = this.flows.keys().next();
    if (!first.done) this.forget(first.value);
  }
}
