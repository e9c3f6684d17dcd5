import { PAGE_SIZE } from "./engine.js";

/**
 * Finds the pages of guest RAM written since the last call by comparing RAM
 * with a shadow copy (v86 keeps no dirty log; ENGINE-NOTES.md: ~10 ms per
 * 64 MiB with Buffer.compare per page). Whoever wrote the page -- guest code,
 * an emulated device's DMA, or our own code through the RAM view -- the
 * comparison sees it. Pages reported are copied into the shadow, so each
 * write is reported exactly once.
 *
 * The shadow starts as zeros, like RAM at power-on: the first call reports
 * every page that is not zero (BIOS, kernel, initrd, and what ran since).
 */
/** Bytes touched per turn of the event loop by touchPages (2 MiB: ~2 ms of page faults here). */
const TOUCH_SLICE_BYTES = 2 * 2 ** 20;

/**
 * Faults in every page of `bytes`, TOUCH_SLICE_BYTES per turn of the event
 * loop, so timers and sockets are served in between. "write" stores each
 * page's first byte back (private memory: a read would only map the shared
 * zero page, and the first real write would fault again); "read" only
 * reads, which is enough for a tmpfs file (a read fault allocates its page)
 * and the only safe way on memory another process writes concurrently
 * (guest RAM: a store of the old value could undo QEMU's write).
 */
export async function touchPages(bytes: Uint8Array, mode: "read" | "write"): Promise<void> {
  let sink = 0;
  for (let start = 0; start < bytes.length; start += TOUCH_SLICE_BYTES) {
    const end = Math.min(bytes.length, start + TOUCH_SLICE_BYTES);
    if (mode === "write") for (let off = start; off < end; off += PAGE_SIZE) bytes[off] = bytes[off] as number;
    else for (let off = start; off < end; off += PAGE_SIZE) sink |= bytes[off] as number;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  if (sink === -1) throw new Error("unreachable"); // keeps the reads from being optimized away
}

/** What an engine's dirty-page finder does (ShadowDirtyTracker; WriteLogTracker with the kernel's write log). */
export interface PageTracker {
  readonly memoryBytes: number;
  prefault(): Promise<void>;
  markDirty(pfn: number): void;
  take(ram: Uint8Array): Uint32Array;
  copied(ram: Uint8Array, pfns: ArrayLike<number>, sent?: Uint8Array): void;
  resync(ram: Uint8Array): void;
}

/** Pages compared at once before looking at single pages (64 KiB). */
const PAGES_PER_BLOCK = 16;

export class ShadowDirtyTracker implements PageTracker {
  private readonly shadow: Buffer;
  private readonly forced = new Set<number>();

  constructor(readonly memoryBytes: number) {
    if (memoryBytes % PAGE_SIZE !== 0) {
      throw new RangeError(`memory size ${memoryBytes} is not a multiple of the page size ${PAGE_SIZE}`);
    }
    this.shadow = Buffer.alloc(memoryBytes);
  }

  /**
   * Touches every page of the shadow, a slice at a time between turns of
   * the event loop. A large zeroed allocation is mapped lazily, and the
   * first take() or resync() would otherwise pay a page fault per page in
   * one go (measured here: 4.2 us a fault, 1.1 s for 256 MiB, with the
   * loop that carries heartbeats blocked). Engines start it when they start.
   */
  prefault(): Promise<void> {
    return touchPages(this.shadow, "write");
  }

  get pageCount(): number {
    return this.memoryBytes / PAGE_SIZE;
  }

  /** Report a page even if its bytes did not change (e.g. rewritten with the same value). */
  markDirty(pfn: number): void {
    if (!Number.isInteger(pfn) || pfn < 0 || pfn >= this.pageCount) {
      throw new RangeError(`pfn ${pfn} outside guest RAM (${this.pageCount} pages)`);
    }
    this.forced.add(pfn);
  }

  /** Sorted page frame numbers changed since the last call; updates the shadow. */
  take(ram: Uint8Array): Uint32Array {
    if (ram.length < this.memoryBytes) {
      throw new RangeError(`RAM view of ${ram.length} bytes is smaller than ${this.memoryBytes}`);
    }
    const live = Buffer.from(ram.buffer, ram.byteOffset, this.memoryBytes);
    const out: number[] = [];
    const pages = this.pageCount;
    // Blocks of pages first: most of RAM is unchanged, and one native compare per
    // 64 KiB costs much less than sixteen (measured: 7 ms instead of 12 for 160 MiB).
    const blocksWithForced = new Set<number>();
    for (const pfn of this.forced) blocksWithForced.add(Math.floor(pfn / PAGES_PER_BLOCK));
    for (let first = 0; first < pages; first += PAGES_PER_BLOCK) {
      const last = Math.min(pages, first + PAGES_PER_BLOCK);
      const blockStart = first * PAGE_SIZE;
      const blockEnd = last * PAGE_SIZE;
      if (!blocksWithForced.has(first / PAGES_PER_BLOCK) && live.compare(this.shadow, blockStart, blockEnd, blockStart, blockEnd) === 0) continue;
      for (let pfn = first; pfn < last; pfn++) {
        const start = pfn * PAGE_SIZE;
        const end = start + PAGE_SIZE;
        if (this.forced.has(pfn) || live.compare(this.shadow, start, end, start, end) !== 0) {
          live.copy(this.shadow, start, start, end);
          out.push(pfn);
        }
      }
    }
    this.forced.clear();
    return Uint32Array.from(out);
  }

  /**
   * These pages were just copied out of `ram`: from now on, only bytes that
   * differ from this copy make them dirty. Without this, a page reported by
   * take(), then written, then written back before the copy, would carry the
   * intermediate bytes to the copy and never be reported again. With `sent`
   * (the pages as the transfer copied them, in pfns order) the copy takes
   * those bytes: RAM may have changed since (a vCPU in another thread).
   */
  copied(ram: Uint8Array, pfns: ArrayLike<number>, sent?: Uint8Array): void {
    if (sent !== undefined && sent.length !== pfns.length * PAGE_SIZE) throw new RangeError(`${sent.length} bytes sent for ${pfns.length} pages`);
    const live = Buffer.from(ram.buffer, ram.byteOffset, this.memoryBytes);
    for (let i = 0; i < pfns.length; i++) {
      const pfn = pfns[i] as number;
      if (!Number.isInteger(pfn) || pfn < 0 || pfn >= this.pageCount) throw new RangeError(`pfn ${pfn} outside guest RAM (${this.pageCount} pages)`);
      if (sent !== undefined) this.shadow.set(sent.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE), pfn * PAGE_SIZE);
      else live.copy(this.shadow, pfn * PAGE_SIZE, pfn * PAGE_SIZE, (pfn + 1) * PAGE_SIZE);
      this.forced.delete(pfn);
    }
  }

  /**
   * Make the shadow equal to RAM without reporting anything: used after RAM
   * was replaced wholesale by a caller that already knows what changed
   * (e.g. a restore that sent every page).
   */
  resync(ram: Uint8Array): void {
    Buffer.from(ram.buffer, ram.byteOffset, this.memoryBytes).copy(this.shadow);
    this.forced.clear();
  }
}
