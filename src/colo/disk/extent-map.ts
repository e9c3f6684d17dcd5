/**
 * A sparse overlay of byte ranges over some underlying device: the newest
 * write to a byte wins, reads return the overlay's bytes where it has them and
 * the underlying device's bytes elsewhere.
 *
 * Layout: non-overlapping extents `[start, end)` sorted by offset, each with
 * its bytes in a `SpillStore` (memory within the budget, else the spill file;
 * see spill-store.ts). A write cuts the extents it overlaps: the uncovered
 * head of the first and tail of the last are kept (spilled pieces by file
 * position, no copy), those in between are dropped, and the new extent goes
 * in their place. Adjacent extents are not coalesced (that would copy bytes);
 * the count is bounded by the writes since the last `clear()`.
 *
 * The sorted sequence is stored as a list of blocks of at most 2·B extents
 * (B = BLOCK_EXTENTS = 256), a two-level B-tree: one flat sorted array would
 * cost a memmove of up to n pointers per insert (measured: 50-75 µs per
 * write at n = 200 000, against a few µs here).
 *
 * Cost, with n extents and k of them touched by the operation: write
 * O(log n + k + B), plus O(n / B) when a block splits or merges; read
 * O(log n + k) plus the bytes copied; iteration O(n).
 *
 * Spill file garbage (spilled bytes later overwritten) is reclaimed by
 * compaction once it exceeds both the live spilled bytes and
 * `compactMinGarbageBytes`: live runs are copied to a fresh file, so the file
 * stays under about twice the live bytes plus that minimum, and each byte
 * written is copied O(1) times amortized.
 */
import { DiskReplicationError } from "./errors.js";
import { DEFAULT_MEMORY_LIMIT_BYTES, MemoryBudget, SpillStore, type FileRun, type SpillStoreStats, type StoredRun } from "./spill-store.js";

/** Garbage in a spill file below which it is never compacted. */
export const DEFAULT_COMPACT_MIN_GARBAGE_BYTES = 16 * 2 ** 20;

export interface ExtentMapOptions {
  /** Directory for the spill file (created on the first spill, unlinked at once). */
  spillDir: string;
  /** Memory for extent data before spilling; default DEFAULT_MEMORY_LIMIT_BYTES (64 MiB). Ignored when `budget` is given. */
  memoryLimitBytes?: number;
  /** A budget shared with other stores (a secondary disk shares one between its overlay and pending log). */
  budget?: MemoryBudget;
  /** Names the map in errors and its spill file: [a-z0-9-]; default "overlay". */
  label?: string;
  /** Default DEFAULT_COMPACT_MIN_GARBAGE_BYTES (16 MiB). */
  compactMinGarbageBytes?: number;
}

/** Reads `length` bytes at `offset` of the device under the overlay; must return exactly `length` bytes. */
export type UnderlyingRead = (offset: number, length: number) => Uint8Array;

export interface ExtentRange {
  offset: number;
  length: number;
}

export interface ExtentEntry {
  offset: number;
  /** The extent's bytes; may be a view of the map's own memory: do not modify, use before the next write or clear. */
  data: Uint8Array;
}

export interface ExtentMapStats extends SpillStoreStats {
  extents: number;
  /** Blocks of the two-level index. */
  blocks: number;
  storedBytes: number;
}

interface Extent {
  start: number;
  end: number;
  run: StoredRun;
}

/** Position of an extent: `index` in block `block`. */
interface Cursor {
  block: number;
  index: number;
}

/** Extents per block: a block splits past 2·B and merges with a neighbour below B/4. */
export const BLOCK_EXTENTS = 256;

export class ExtentMap {
  /** Non-empty blocks; concatenated, they are the extents in offset order. */
  private blocks: Extent[][] = [];
  private count = 0;
  private stored = 0;
  /** Bumped by every change: iterators notice a map changed under them. */
  private generation = 0;
  private readonly store: SpillStore;
  private readonly label: string;
  private readonly compactMinGarbage: number;

  constructor(opts: ExtentMapOptions) {
    this.label = opts.label ?? "overlay";
    const budget = opts.budget ?? new MemoryBudget(opts.memoryLimitBytes ?? DEFAULT_MEMORY_LIMIT_BYTES);
    this.store = new SpillStore(opts.spillDir, this.label, budget);
    this.compactMinGarbage = opts.compactMinGarbageBytes ?? DEFAULT_COMPACT_MIN_GARBAGE_BYTES;
  }

  /** Bytes covered by extents (each byte once, however often it was written). */
  get storedBytes(): number {
    return this.stored;
  }

  get extentCount(): number {
    return this.count;
  }

  /** Puts a copy of `data` at `offset`, over whatever the map held there. */
  write(offset: number, data: Uint8Array): void {
    this.checkOffsets(offset, data.length);
    if (data.length === 0) return;
    const end = offset + data.length;
    const from = this.locate(offset);
    // Walk the extents the write overlaps; `to` ends just past the last one.
    const overlapped: Extent[] = [];
    const to = { block: from.block, index: from.index };
    while (to.block < this.blocks.length) {
      const block = this.blockAt(to.block);
      if (to.index >= block.length) {
        to.block++;
        to.index = 0;
        continue;
      }
      const e = block[to.index];
      if (e === undefined || e.start >= end) break;
      overlapped.push(e);
      to.index++;
    }

    const replacement: Extent[] = [];
    const head = overlapped[0];
    if (head !== undefined && head.start < offset) {
      replacement.push({ start: head.start, end: offset, run: this.store.slice(head.run, 0, offset - head.start) });
    }
    // The new extent's slot; filled after the overwritten runs are given back, so their memory can be reused.
    const slot = replacement.length;
    const tail = overlapped[overlapped.length - 1];
    if (tail !== undefined && tail.end > end) {
      replacement.push({ start: end, end: tail.end, run: this.store.slice(tail.run, end - tail.start, tail.end - tail.start) });
    }
    let removedBytes = 0;
    for (const e of overlapped) {
      removedBytes += e.end - e.start;
      this.store.release(e.run);
    }
    for (const piece of replacement) removedBytes -= piece.end - piece.start;
    let run: StoredRun;
    try {
      run = this.store.put(data);
    } catch (err) {
      // The spill file failed: leave the map as it was.
      for (const piece of replacement) this.store.release(piece.run);
      for (const e of overlapped) this.store.retain(e.run);
      throw err;
    }
    replacement.splice(slot, 0, { start: offset, end, run });
    this.replace(from, to, replacement);
    this.count += replacement.length - overlapped.length;
    this.stored += data.length - removedBytes;
    this.generation++;
    this.maybeCompact();
  }

  /** The overlay over `underlying` for [offset, offset+length); `underlying` is asked only for the gaps. */
  read(offset: number, length: number, underlying: UnderlyingRead): Uint8Array {
    this.checkOffsets(offset, length);
    const end = offset + length;
    const at = this.locate(offset);
    const firstHit = this.blocks[at.block]?.[at.index];
    if (firstHit === undefined || firstHit.start >= end) return this.fromUnderlying(underlying, offset, length);
    const out = new Uint8Array(length);
    let pos = offset;
    while (pos < end) {
      const block = this.blocks[at.block];
      if (block !== undefined && at.index >= block.length) {
        at.block++;
        at.index = 0;
        continue;
      }
      const e = block?.[at.index];
      if (e === undefined || e.start >= end) {
        out.set(this.fromUnderlying(underlying, pos, end - pos), pos - offset);
        break;
      }
      if (e.start > pos) {
        out.set(this.fromUnderlying(underlying, pos, e.start - pos), pos - offset);
        pos = e.start;
      }
      const upto = Math.min(e.end, end);
      this.store.readInto(e.run, pos - e.start, upto - pos, out, pos - offset);
      pos = upto;
      at.index++;
    }
    return out;
  }

  /** The extents' ranges in offset order. */
  *ranges(): Generator<ExtentRange> {
    const generation = this.generation;
    for (const block of this.blocks) {
      for (const e of block) {
        this.checkGeneration(generation);
        yield { offset: e.start, length: e.end - e.start };
      }
    }
  }

  /** The extents with their bytes, in offset order (spilled bytes are read one extent at a time). */
  *entries(): Generator<ExtentEntry> {
    const generation = this.generation;
    for (const block of this.blocks) {
      for (const e of block) {
        this.checkGeneration(generation);
        yield { offset: e.start, data: this.store.load(e.run) };
      }
    }
  }

  /** Empties the map: memory goes back to the budget, the spill file is truncated to zero. */
  clear(): void {
    this.forget();
    this.store.clear();
  }

  /** Clears and closes the spill file. */
  close(): void {
    this.forget();
    this.store.close();
  }

  stats(): ExtentMapStats {
    return { extents: this.count, blocks: this.blocks.length, storedBytes: this.stored, ...this.store.stats() };
  }

  private forget(): void {
    this.blocks = [];
    this.count = 0;
    this.stored = 0;
    this.generation++;
  }

  /** Cursor of the first extent with end > offset (block === blocks.length if none). */
  private locate(offset: number): Cursor {
    let lo = 0;
    let hi = this.blocks.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const block = this.blockAt(mid);
      const last = block[block.length - 1];
      if (last !== undefined && last.end > offset) hi = mid;
      else lo = mid + 1;
    }
    const block = this.blocks[lo];
    if (block === undefined) return { block: lo, index: 0 };
    let first = 0;
    let past = block.length;
    while (first < past) {
      const mid = (first + past) >>> 1;
      const e = block[mid];
      if (e !== undefined && e.end > offset) past = mid;
      else first = mid + 1;
    }
    return { block: lo, index: first };
  }

  /** Replaces the extents from `from` up to (not including) `to` by `replacement` (never empty). */
  private replace(from: Cursor, to: Cursor, replacement: Extent[]): void {
    const first = this.blocks[from.block];
    if (first === undefined) {
      // Every extent ends before the write: it goes last.
      const last = this.blocks[this.blocks.length - 1];
      if (last === undefined) this.blocks.push(replacement);
      else last.push(...replacement);
      this.rebalance(this.blocks.length - 1);
      return;
    }
    if (to.block === from.block) {
      first.splice(from.index, to.index - from.index, ...replacement);
    } else {
      first.splice(from.index, first.length - from.index, ...replacement);
      // The walk stops inside block `to.block` (never at its end), so it keeps at least one extent.
      this.blocks[to.block]?.splice(0, to.index);
      this.blocks.splice(from.block + 1, to.block - from.block - 1);
      this.rebalance(from.block + 1);
    }
    this.rebalance(from.block);
  }

  /** Splits block `b` past 2·B extents; merges it with a neighbour below B/4. */
  private rebalance(b: number): void {
    const block = this.blocks[b];
    if (block === undefined) return;
    if (block.length > 2 * BLOCK_EXTENTS) {
      const half = block.length >>> 1;
      this.blocks.splice(b, 1, block.slice(0, half), block.slice(half));
      return;
    }
    if (block.length >= BLOCK_EXTENTS / 4) return;
    const next = this.blocks[b + 1];
    if (next !== undefined && block.length + next.length <= 2 * BLOCK_EXTENTS) {
      this.blocks.splice(b, 2, block.concat(next));
      return;
    }
    const prev = this.blocks[b - 1];
    if (prev !== undefined && prev.length + block.length <= 2 * BLOCK_EXTENTS) {
      this.blocks.splice(b - 1, 2, prev.concat(block));
    }
  }

  private blockAt(b: number): Extent[] {
    const block = this.blocks[b];
    if (block === undefined) throw new Error(`extent map ${this.label}: block ${b} outside ${this.blocks.length} blocks`);
    return block;
  }

  private fromUnderlying(underlying: UnderlyingRead, offset: number, length: number): Uint8Array {
    const bytes = underlying(offset, length);
    if (bytes.length !== length) {
      throw new DiskReplicationError(
        `extent map ${this.label}`,
        "UNDERLYING",
        `underlying read [${offset}, +${length}) returned ${bytes.length} bytes`,
      );
    }
    return bytes;
  }

  private maybeCompact(): void {
    const garbage = this.store.garbageBytes;
    if (garbage <= this.compactMinGarbage || garbage <= this.store.liveFileBytes) return;
    const live: FileRun[] = [];
    for (const block of this.blocks) for (const e of block) if (e.run.where === "file") live.push(e.run);
    this.store.compact(live);
  }

  private checkOffsets(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new DiskReplicationError(`extent map ${this.label}`, "RANGE", `bad range [${offset}, +${length})`);
    }
  }

  private checkGeneration(generation: number): void {
    if (generation !== this.generation) {
      throw new DiskReplicationError(`extent map ${this.label}`, "STATE", "changed during iteration");
    }
  }
}
