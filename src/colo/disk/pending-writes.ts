/**
 * The primary VM's writes received on the secondary since the last
 * checkpoint, kept as an ordered log (COLO-PROTOCOL.md §7): a checkpoint
 * covering seq N applies the writes <= N in seq order, so of two
 * overlapping writes the later one wins exactly as on the primary, while
 * writes > N (already received, not yet covered) stay behind, in order.
 * Repeated writes to one sector are each kept: the log grows with the bytes
 * the primary wrote, which is what a checkpoint then has to apply.
 *
 * Data lives in a SpillStore (memory within the budget, then a spill file).
 * After a checkpoint that leaves writes behind, those are copied into the
 * emptied store, so the spill file never holds more than the pending bytes.
 */
import type { SpillStore, StoredRun } from "./spill-store.js";

interface PendingWrite {
  readonly seq: number;
  readonly offset: number;
  readonly run: StoredRun;
  readonly length: number;
}

export interface AppliedWrites {
  /** Writes applied. */
  applied: number;
  /** Bytes those writes carried. */
  bytes: number;
}

export class PendingWriteLog {
  /** In seq order. */
  private writes: PendingWrite[] = [];
  private bytes = 0;

  constructor(private readonly store: SpillStore) {}

  get count(): number {
    return this.writes.length;
  }

  /** Bytes carried by the pending writes (overlapping writes counted each time). */
  get byteLength(): number {
    return this.bytes;
  }

  /** Appends a copy of `data`; the caller keeps seqs increasing. */
  append(seq: number, offset: number, data: Uint8Array): void {
    this.writes.push({ seq, offset, run: this.store.put(data), length: data.length });
    this.bytes += data.length;
  }

  /**
   * Hands the writes with seq <= `uptoSeq` to `apply` in seq order and
   * forgets them. If `apply` throws, the log is left as it was.
   */
  applyUpTo(uptoSeq: number, apply: (offset: number, data: Uint8Array) => void): AppliedWrites {
    let covered = 0;
    let bytes = 0;
    for (const w of this.writes) {
      if (w.seq > uptoSeq) break;
      apply(w.offset, this.store.load(w.run));
      covered++;
      bytes += w.length;
    }
    const remaining = this.writes.slice(covered);
    this.writes = [];
    this.bytes = 0;
    if (remaining.length === 0) {
      this.store.clear();
    } else {
      const kept = remaining.map((w) => ({ seq: w.seq, offset: w.offset, data: copy(this.store.load(w.run)) }));
      this.store.clear();
      for (const w of kept) this.append(w.seq, w.offset, w.data);
    }
    return { applied: covered, bytes };
  }

  /** Forgets every pending write; returns what was dropped. */
  dropAll(): AppliedWrites {
    const dropped = { applied: this.writes.length, bytes: this.bytes };
    this.writes = [];
    this.bytes = 0;
    this.store.clear();
    return dropped;
  }

  close(): void {
    this.writes = [];
    this.bytes = 0;
    this.store.close();
  }
}

/** Detaches bytes from the store's memory before the store is cleared. */
function copy(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(data.length);
  out.set(data);
  return out;
}
