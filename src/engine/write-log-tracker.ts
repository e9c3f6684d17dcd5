/**
 * Dirty pages from the kernel's write log (src/sys/write-log.ts) instead of
 * a compare with a shadow copy: of guest RAM in this process (emu, open()),
 * or of a QEMU process's mapping of it (qemu, over(); switchTo() when the
 * engine replaces that process). Same
 * contract as ShadowDirtyTracker: take() lists each page written since the
 * last take() once, markDirty() adds one, resync() forgets what was
 * written. copied() needs no copy (the log records writes, whatever their
 * bytes, so a page written after it is listed anyway); it only keeps the
 * first take() from listing again what a transfer already sent.
 *
 * It lists more than the shadow compare on occasion (a write of the bytes a
 * page already held), never less. The first take() lists every page that is
 * not zero (as the shadow, which starts as zeros) and every page written
 * since the log opened. If RAM moved (wasm memory reallocated: V8 grows it
 * in place on 64-bit hosts, so this is a guard), the log is opened again on
 * the new address and that take() lists every page.
 */
import { bufferAddress, openWriteLog, type WriteLog } from "../sys/index.js";
import type { PageTracker } from "./dirty-tracker.js";
import { PAGE_SIZE } from "./engine.js";

const ZERO_BLOCK = Buffer.alloc(16 * PAGE_SIZE);

/** Pages of `ram` with any byte that is not zero (64 KiB compared at once, then per page). */
function nonZeroPages(ram: Uint8Array): number[] {
  const out: number[] = [];
  const live = Buffer.from(ram.buffer, ram.byteOffset, ram.length);
  const pages = ram.length / PAGE_SIZE;
  for (let first = 0; first < pages; first += 16) {
    const last = Math.min(pages, first + 16);
    if (live.compare(ZERO_BLOCK, 0, (last - first) * PAGE_SIZE, first * PAGE_SIZE, last * PAGE_SIZE) === 0) continue;
    for (let pfn = first; pfn < last; pfn++) {
      if (live.compare(ZERO_BLOCK, 0, PAGE_SIZE, pfn * PAGE_SIZE, (pfn + 1) * PAGE_SIZE) !== 0) out.push(pfn);
    }
  }
  return out;
}

export class WriteLogTracker implements PageTracker {
  private readonly forced = new Set<number>();
  /** The next take() lists every page (RAM moved), or every page not zero (first take). */
  private pending: "none" | "non-zero" | "all" = "non-zero";
  /** Before the first take(): pages a transfer copied (pre-copy's first round), not listed again unless written. */
  private copiedBeforeFirst = new Set<number>();

  private constructor(
    readonly memoryBytes: number,
    private log: WriteLog,
    /** The log is of the RAM view itself (emu): a view at another address means RAM moved. */
    private readonly followsRam: boolean,
  ) {}

  /** A tracker on `ram` (its first take() lists every page not zero), or why the kernel gives no write log. */
  static open(ram: Uint8Array): WriteLogTracker | { unavailable: string } {
    const log = openWriteLog(ram);
    if ("unavailable" in log) return log;
    return new WriteLogTracker(ram.length, log, true);
  }

  /**
   * A tracker on a log of another process's writes to guest RAM (qemu):
   * writes through our own view of it are not in it (mark them with
   * markDirty() where they must count). The first take() lists every page
   * not zero, as open()'s.
   */
  static over(memoryBytes: number, log: WriteLog): WriteLogTracker {
    if (log.length !== memoryBytes) throw new RangeError(`a write log of ${log.length} bytes for ${memoryBytes} bytes of RAM`);
    return new WriteLogTracker(memoryBytes, log, false);
  }

  /**
   * From now on, writes come from the process `log` watches (qemu: the
   * standby that replaced the running QEMU). What the old log holds that
   * no take() listed yet is kept for the next one; the old log is closed.
   */
  switchTo(log: WriteLog): void {
    if (this.followsRam) throw new Error("switchTo() is for a tracker made by over()");
    if (log.length !== this.memoryBytes) throw new RangeError(`a write log of ${log.length} bytes for ${this.memoryBytes} bytes of RAM`);
    if (log === this.log) return;
    for (const pfn of this.log.takeWritten()) this.forced.add(pfn);
    this.log.close();
    this.log = log;
  }

  get pageCount(): number {
    return this.memoryBytes / PAGE_SIZE;
  }

  prefault(): Promise<void> {
    return Promise.resolve(); // no shadow to map
  }

  markDirty(pfn: number): void {
    if (!Number.isInteger(pfn) || pfn < 0 || pfn >= this.pageCount) throw new RangeError(`pfn ${pfn} outside guest RAM (${this.pageCount} pages)`);
    this.forced.add(pfn);
  }

  take(ram: Uint8Array): Uint32Array {
    this.follow(ram);
    const written = this.log.takeWritten();
    const pending = this.pending;
    this.pending = "none";
    if (pending === "all") {
      this.forced.clear();
      return Uint32Array.from({ length: this.pageCount }, (_, i) => i);
    }
    const out = new Set<number>(written);
    for (const pfn of this.forced) out.add(pfn);
    if (pending === "non-zero") for (const pfn of nonZeroPages(ram.subarray(0, this.memoryBytes))) if (!this.copiedBeforeFirst.has(pfn)) out.add(pfn);
    this.copiedBeforeFirst = new Set();
    this.forced.clear();
    return Uint32Array.from([...out].sort((a, b) => a - b));
  }

  copied(ram: Uint8Array, pfns: ArrayLike<number>, sent?: Uint8Array): void {
    if (sent !== undefined && sent.length !== pfns.length * PAGE_SIZE) throw new RangeError(`${sent.length} bytes sent for ${pfns.length} pages`);
    this.follow(ram);
    for (let i = 0; i < pfns.length; i++) {
      const pfn = pfns[i] as number;
      this.forced.delete(pfn);
      // The log records writes from its opening: a page copied since is listed again only if written after.
      if (this.pending === "non-zero") this.copiedBeforeFirst.add(pfn);
    }
  }

  resync(ram: Uint8Array): void {
    this.follow(ram);
    this.log.takeWritten();
    this.forced.clear();
    this.copiedBeforeFirst = new Set();
    this.pending = "none";
  }

  close(): void {
    this.log.close();
  }

  /** RAM moved: a log on the new address, and the next take() lists everything. */
  private follow(ram: Uint8Array): void {
    if (ram.length < this.memoryBytes) throw new RangeError(`RAM view of ${ram.length} bytes is smaller than ${this.memoryBytes}`);
    if (!this.followsRam) return;
    const view = ram.subarray(0, this.memoryBytes);
    if (bufferAddress(view) === this.log.address) return;
    this.log.close();
    const again = openWriteLog(view);
    if ("unavailable" in again) throw new Error(`guest RAM moved and no write log could be opened on it: ${again.unavailable}`);
    this.log = again;
    this.pending = "all";
  }
}
