/**
 * One direction of a TCP connection as the comparator sees it: the PVM's and
 * the SVM's units reassembled by position and compared as they arrive, the
 * watermark below which everything is settled, the SVM's acks and RST, and
 * SVM SYNs waiting for the PVM's ISN (comparator.ts says what is compared).
 */
import { type TcpSegment, seqAdd, seqDiff, seqGte } from "./packet.js";
import { IntervalSet, PieceStore, type Units, pieceEnd, sliceUnits, unitAt, unitCount } from "./stream-units.js";

export interface Mismatch {
  position: number;
  pvm: number;
  svm: number;
}

export type IngestResult = { kind: "ok" } | { kind: "mismatch"; mismatch: Mismatch } | { kind: "overflow" };

/** An SVM SYN that arrived before the PVM's: placed once the PVM's ISN is known. */
export interface DeferredSyn {
  seq: number;
  /** Its ack number (SYN-ACK), credited to the stream it is placed in. */
  ack: number | undefined;
  units: Units;
  at: number;
}

/** One direction of a TCP connection, guest -> peer, as both VMs send it. */
export class TcpStream {
  /** Sequence number at position 0; set by the first segment seen. */
  base: number | undefined;
  /** Everything below this position is settled: compared, or sent before the flow state began. */
  matched = 0;
  /** The watermark was placed at the PVM's first segment. */
  pvmAnchored = false;
  pvmIsn: number | undefined;
  /** The seq of the first SVM SYN placed on the PVM's (the SVM's ISN, or the PVM's once rewritten). */
  svmSynSeq: number | undefined;
  svmMaxAck: number | undefined;
  svmRst = false;
  /** Compared ranges above the watermark (where a gap keeps it from advancing). */
  readonly compared = new IntervalSet();
  readonly pvmPending = new PieceStore();
  readonly svmPending: PieceStore;
  deferredSyns: DeferredSyn[] = [];

  constructor(reserveSecondary: (delta: number) => boolean) {
    this.svmPending = new PieceStore(reserveSecondary);
  }

  creditSvmAck(ack: number): void {
    if (this.svmMaxAck === undefined || seqGte(ack, this.svmMaxAck)) this.svmMaxAck = ack;
  }

  hasBase(): boolean {
    return this.base !== undefined;
  }

  /** Position of `seq`, taken within 2^31 of the watermark (RFC 1982). */
  position(seq: number): number {
    const base = this.base ?? seq;
    return this.matched + seqDiff(seq, seqAdd(base, this.matched));
  }

  sequenceAt(position: number): number {
    return seqAdd(this.base ?? 0, position);
  }

  /** The first PVM segment: nothing below it is compared any more. */
  anchor(position: number): void {
    this.pvmAnchored = true;
    this.matched = position;
    this.compared.dropBelow(position);
    this.svmPending.dropBelow(position);
    this.advance();
  }

  settled(start: number, end: number): boolean {
    if (end <= this.matched || end <= start) return true;
    return this.compared.gaps(Math.max(start, this.matched), end).length === 0;
  }

  svmQueuedUnits(): number {
    let n = this.svmPending.units;
    for (const d of this.deferredSyns) n += unitCount(d.units);
    return n;
  }

  /**
   * New units from one side at [start, start + n): compared with what the
   * other side has pending; the rest waits for the other side.
   */
  ingest(side: "pvm" | "svm", start: number, units: Units, nowMs: number): IngestResult {
    const end = start + unitCount(units);
    // Until the PVM's first segment places the watermark, no SVM data is below it.
    const floor = this.pvmAnchored ? this.matched : -Infinity;
    if (end <= floor) return { kind: "ok" };
    const own = side === "pvm" ? this.pvmPending : this.svmPending;
    const other = side === "pvm" ? this.svmPending : this.pvmPending;
    const keep = (from: number, to: number): boolean => {
      const slice = sliceUnits(units, from - start, to - start);
      // SVM octets are copied: the caller's buffer is not ours to keep.
      const stored = side === "svm" ? { ...slice, data: slice.data.slice() } : slice;
      return own.add({ start: from, units: stored, at: nowMs });
    };
    for (const [a, b] of this.compared.gaps(Math.max(start, floor), end)) {
      for (const [c, d] of own.gaps(a, b)) {
        let cursor = c;
        for (const q of other.overlapping(c, d)) {
          if (q.start > cursor && !keep(cursor, q.start)) return { kind: "overflow" };
          const qEnd = pieceEnd(q);
          for (let p = q.start; p < qEnd; p++) {
            const mine = unitAt(units, p - start);
            const theirs = unitAt(q.units, p - q.start);
            if (mine !== theirs) {
              const mismatch = side === "pvm" ? { position: p, pvm: mine, svm: theirs } : { position: p, pvm: theirs, svm: mine };
              return { kind: "mismatch", mismatch };
            }
          }
          other.remove(q.start, qEnd);
          this.compared.add(q.start, qEnd);
          cursor = qEnd;
        }
        if (cursor < d && !keep(cursor, d)) return { kind: "overflow" };
      }
    }
    this.advance();
    return { kind: "ok" };
  }

  private advance(): void {
    if (!this.pvmAnchored) return;
    for (let first = this.compared.first(); first && first[0] <= this.matched; first = this.compared.first()) {
      this.matched = Math.max(this.matched, first[1]);
      this.compared.dropBelow(this.matched);
    }
    this.svmPending.dropBelow(this.matched);
    this.pvmPending.dropBelow(this.matched);
  }
}

export function tcpUnits(tcp: TcpSegment): Units {
  return { syn: tcp.flags.syn, data: tcp.payload, fin: tcp.flags.fin };
}
