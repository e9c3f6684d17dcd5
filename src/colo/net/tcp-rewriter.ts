/**
 * The secondary's TCP rewriter (COLO-PROTOCOL.md §6; COLO-proxy's "TCP
 * sequence number adjustment").
 *
 * A connection opened after the last checkpoint has a different initial
 * sequence number (ISN) on each VM, and often a different TCP timestamp base.
 * The peer talks to the PVM, so everything it sends is in the PVM's sequence
 * space. This rewriter translates at the SVM's NIC:
 *
 * - SVM output (toward the comparator): seq += offset, TSval += tsOffset;
 * - mirrored input (toward the SVM): ack -= offset, SACK edges -= offset,
 *   TSecr -= tsOffset;
 *
 * where offset = PVM ISN - SVM ISN (mod 2^32). The SVM's ISN comes from its
 * SYN (guest-initiated) or SYN-ACK (guest-accepted). The PVM's ISN is learned
 * from the first segment with ACK the peer sends afterwards: that is the
 * peer's SYN-ACK or the third handshake ACK, and either acknowledges the
 * PVM's ISN + 1. Likewise its TSecr echoes the PVM's SYN TSval, which gives
 * tsOffset against the SVM's SYN TSval. The SVM's SYN itself goes out
 * unrewritten (nothing is known yet); the comparator maps it onto the PVM's.
 *
 * Ordering assumption: the mirrored handshake ACK reaches the rewriter after
 * the SVM's SYN-ACK. If it came first, the SVM would see a wrong ack, answer
 * with RST, and the comparator would report the divergence (a checkpoint
 * repairs it).
 *
 * Connections are keyed by the guest's side (guest ip:port, peer ip:port),
 * so both directions find one entry. A connection without an entry passes
 * unchanged (offset 0): that is every connection older than the last
 * checkpoint, since a checkpoint copies the PVM's exact TCP state into the
 * SVM, and `reset()` then forgets all entries. Entries go after an RST, after
 * both FINs have been acknowledged, or as the least recently used when the
 * table is full.
 *
 * Frames are never modified in place: a rewritten frame is a copy with fixed
 * checksums; a frame that needs no change is returned as is. Non-TCP frames
 * pass unchanged.
 */
import type { TranslationEntry } from "../../state/link-translation-record.js";
import { TCP, type TcpSegment, fixChecksums, parseFrame, segmentLength, seqAdd, seqGte } from "./packet.js";

/** Bound on remembered connections (each entry is a few dozen octets). */
export const DEFAULT_MAX_REWRITER_CONNECTIONS = 16384;

export interface TcpRewriterOptions {
  maxConnections?: number;
}

export interface TcpRewriterStats {
  connections: number;
  /** SVM frames whose seq/TSval were rewritten. */
  rewrittenOut: number;
  /** Mirrored frames whose ack/SACK/TSecr were rewritten. */
  rewrittenIn: number;
  /** Connections whose offset was learned. */
  learned: number;
  /** Entries dropped because the table was full. */
  evicted: number;
}

/**
 * One connection's state as snapshot() gives it and restored() takes it:
 * the stream's LINK_TRANSLATION entry (docs/specs/stream.md §3.15), one
 * definition for both (a type only: nothing of src/state runs here).
 */
export type RewriterEntry = TranslationEntry;

interface Connection {
  readonly guestIp: number;
  readonly guestPort: number;
  readonly peerIp: number;
  readonly peerPort: number;
  /** The SVM's ISN, from its SYN or SYN-ACK. */
  svmIsn: number;
  svmSynTsval: number | undefined;
  /** PVM ISN - SVM ISN, once learned. */
  offset: number | undefined;
  /** PVM TSval base - SVM TSval base, once learned (both VMs sent timestamps). */
  tsOffset: number | undefined;
  /** In the PVM's sequence space: the guest's FIN + 1. */
  guestFinEnd: number | undefined;
  /** In the peer's sequence space: the peer's FIN + 1. */
  peerFinEnd: number | undefined;
  guestFinAcked: boolean;
  peerFinAcked: boolean;
}

function connectionKey(guestIp: number, guestPort: number, peerIp: number, peerPort: number): string {
  return `${guestIp}:${guestPort}-${peerIp}:${peerPort}`;
}

export class TcpRewriter {
  private readonly maxConnections: number;
  /** Least recently used first. */
  private connections = new Map<string, Connection>();
  private counters = { rewrittenOut: 0, rewrittenIn: 0, learned: 0, evicted: 0 };
  /** Bumped by every change of the table's contents (not by a lookup): what a carried copy must follow. */
  private changes = 0;

  constructor(opts: TcpRewriterOptions = {}) {
    this.maxConnections = Math.max(1, opts.maxConnections ?? DEFAULT_MAX_REWRITER_CONNECTIONS);
  }

  /** A frame the SVM sent: into the PVM's sequence space. */
  fromSecondaryVm(frame: Uint8Array): Uint8Array {
    const p = parseFrame(frame);
    if (p.kind !== "tcp") return frame;
    const tcp = p.tcp;
    const key = connectionKey(p.ip.src, tcp.srcPort, p.ip.dst, tcp.dstPort);
    const conn = this.touch(key);
    if (tcp.flags.syn && (!conn || conn.svmIsn !== tcp.seq)) {
      // A SYN with a new ISN opens a (new) connection; a retransmitted SYN keeps the entry.
      const fresh: Connection = {
        guestIp: p.ip.src,
        guestPort: tcp.srcPort,
        peerIp: p.ip.dst,
        peerPort: tcp.dstPort,
        svmIsn: tcp.seq,
        svmSynTsval: tcp.timestamps?.tsval,
        offset: undefined,
        tsOffset: undefined,
        guestFinEnd: undefined,
        peerFinEnd: undefined,
        guestFinAcked: false,
        peerFinAcked: false,
      };
      this.insert(key, fresh);
      return frame;
    }
    if (!conn) return frame;
    let out = frame;
    let seq = tcp.seq;
    if (conn.offset !== undefined) {
      out = frame.slice();
      const v = new DataView(out.buffer, out.byteOffset, out.byteLength);
      seq = seqAdd(tcp.seq, conn.offset);
      v.setUint32(tcp.offset + TCP.seq, seq);
      if (tcp.timestamps && conn.tsOffset !== undefined) v.setUint32(tcp.timestamps.tsvalOffset, seqAdd(tcp.timestamps.tsval, conn.tsOffset));
      fixChecksums(out);
      this.counters.rewrittenOut++;
    }
    this.track(key, conn, tcp, seq, "guest");
    return out;
  }

  /** A mirrored frame for the SVM: into the SVM's sequence space. */
  toSecondaryVm(frame: Uint8Array): Uint8Array {
    const p = parseFrame(frame);
    if (p.kind !== "tcp") return frame;
    const tcp = p.tcp;
    const key = connectionKey(p.ip.dst, tcp.dstPort, p.ip.src, tcp.srcPort);
    const conn = this.touch(key);
    if (!conn) return frame;
    if (conn.offset === undefined && tcp.flags.ack) {
      // The peer acknowledges the PVM's ISN + 1 (its SYN-ACK, or the third handshake ACK).
      conn.offset = seqAdd(tcp.ack, -seqAdd(conn.svmIsn, 1));
      if (tcp.timestamps && conn.svmSynTsval !== undefined) conn.tsOffset = seqAdd(tcp.timestamps.tsecr, -conn.svmSynTsval);
      this.counters.learned++;
      this.changes++;
    }
    let out = frame;
    // Without ACK the ack field, SACK blocks and TSecr carry no meaning (RFC 793, RFC 7323 §3.2).
    if (conn.offset !== undefined && tcp.flags.ack) {
      const offset = conn.offset;
      out = frame.slice();
      const v = new DataView(out.buffer, out.byteOffset, out.byteLength);
      v.setUint32(tcp.offset + TCP.ack, seqAdd(tcp.ack, -offset));
      for (const block of tcp.sack) {
        v.setUint32(block.leftOffset, seqAdd(block.left, -offset));
        v.setUint32(block.rightOffset, seqAdd(block.right, -offset));
      }
      if (tcp.timestamps && conn.tsOffset !== undefined) v.setUint32(tcp.timestamps.tsecrOffset, seqAdd(tcp.timestamps.tsecr, -conn.tsOffset));
      fixChecksums(out);
      this.counters.rewrittenIn++;
    }
    this.track(key, conn, tcp, tcp.seq, "peer");
    return out;
  }

  /** A checkpoint made the SVM's TCP state the PVM's: all offsets are 0 again. */
  reset(): void {
    this.connections = new Map();
  }

  /**
   * The connections whose numbers it changes, least recently used first:
   * what a survivor carries to its next secondary or a migration's
   * destination (LINK_TRANSLATION, spec §3.15). Left out, as a missing
   * entry passes frames unchanged too: connections with offset 0 (opened
   * with this side's own numbers) and those whose offset is not learned yet
   * (a copy would learn a wrong one from a later ack).
   */
  snapshot(): RewriterEntry[] {
    const out: RewriterEntry[] = [];
    for (const c of this.connections.values()) {
      if (c.offset === undefined || (c.offset === 0 && (c.tsOffset ?? 0) === 0)) continue;
      out.push({ ...c });
    }
    return out;
  }

  /** Changes of the table so far (increasing): a carried copy is stale when this moved since it was taken. */
  get version(): number {
    return this.changes;
  }

  /** A rewriter that goes on from `entries` (a snapshot(), possibly another process's). */
  static restored(entries: readonly RewriterEntry[], opts: TcpRewriterOptions = {}): TcpRewriter {
    const r = new TcpRewriter(opts);
    for (const e of entries) r.insert(connectionKey(e.guestIp, e.guestPort, e.peerIp, e.peerPort), { ...e });
    return r;
  }

  stats(): TcpRewriterStats {
    return { connections: this.connections.size, ...this.counters };
  }

  // -------------------------------------------------------------------------

  private touch(key: string): Connection | undefined {
    const conn = this.connections.get(key);
    if (conn) {
      this.connections.delete(key);
      this.connections.set(key, conn);
    }
    return conn;
  }

  private insert(key: string, conn: Connection): void {
    this.changes++;
    this.connections.delete(key);
    while (this.connections.size >= this.maxConnections) {
      const oldest = this.connections.keys().next();
      if (oldest.done) break;
      this.connections.delete(oldest.value);
      this.counters.evicted++;
    }
    this.connections.set(key, conn);
  }

  /**
   * Close tracking: the entry goes after an RST, or once each side's FIN has
   * been acknowledged by the other. `seq` is in the PVM's space for guest
   * segments (after rewriting), the peer's own space for peer segments;
   * acks of guest segments are compared before rewriting (PVM space).
   */
  private track(key: string, conn: Connection, tcp: TcpSegment, seq: number, from: "guest" | "peer"): void {
    if (tcp.flags.rst) {
      this.connections.delete(key);
      this.changes++;
      return;
    }
    const finEnd = tcp.flags.fin ? seqAdd(seq, segmentLength(tcp)) : undefined;
    const before = `${conn.guestFinEnd}/${conn.peerFinEnd}/${conn.guestFinAcked}/${conn.peerFinAcked}`;
    if (from === "guest") {
      if (finEnd !== undefined) conn.guestFinEnd = finEnd;
      if (tcp.flags.ack && conn.peerFinEnd !== undefined && seqGte(tcp.ack, conn.peerFinEnd)) conn.peerFinAcked = true;
    } else {
      if (finEnd !== undefined) conn.peerFinEnd = finEnd;
      if (tcp.flags.ack && conn.guestFinEnd !== undefined && seqGte(tcp.ack, conn.guestFinEnd)) conn.guestFinAcked = true;
    }
    if (`${conn.guestFinEnd}/${conn.peerFinEnd}/${conn.guestFinAcked}/${conn.peerFinAcked}` !== before) this.changes++;
    if (conn.guestFinAcked && conn.peerFinAcked) this.connections.delete(key);
  }
}
