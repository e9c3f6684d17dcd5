/**
 * How fast a running guest dirties its RAM, measured without pausing it and
 * without touching the engine's dirty log. takeDirtyPages() would do for a
 * paused or replicating guest, but on one that runs unprotected it takes
 * the pages the next transfer needs from the tracker's shadow, and its
 * first call after boot compares every page changed since boot in one turn
 * of the event loop (410 ms for a 160 MiB emu guest, docs/engines.md: the
 * daemon, its NIC frames and, on emu, the guest itself held meanwhile).
 *
 * Instead: a copy of RAM (of every k-th 64 KiB block when RAM exceeds the
 * budget), a wait, and a compare with RAM as it is then, each a slice at a
 * time between turns of the event loop. Pages whose bytes differ are the
 * pages dirtied in the window (a page written back to its old bytes is not
 * seen: a transfer would not need to send it either). With a sample, the
 * count is scaled to the whole of RAM (`exact` false).
 */
import { PAGE_SIZE } from "./engine.js";
import { monotonicMs, type Clock } from "../sys/clock.js";

/** Memory the sample's copy may take; larger RAM is sampled (every k-th block). */
export const DEFAULT_DIRTY_SAMPLE_BUDGET_BYTES = 64 * 2 ** 20;
/** Pages per block: one native compare per block, then per page only in blocks that changed. */
const BLOCK_PAGES = 16;
const BLOCK_BYTES = BLOCK_PAGES * PAGE_SIZE;
/**
 * Bytes copied or compared per turn of the event loop. 1 MiB: the first
 * copy into the sample's buffer takes a page fault per page (256 a slice;
 * ~15 us each measured here under kvm-pvm, 4 ms a slice), the rest is
 * memcpy and memcmp (64 MiB of either in 7-19 ms once faulted in).
 */
const SLICE_BYTES = 2 ** 20;

export interface DirtyRateSample {
  /** Mean time between a page's copy and its compare: at least the window asked for (half the compare pass more). */
  windowMs: number;
  /** Pages of guest RAM. */
  pages: number;
  /** Pages copied and compared (all of them when `exact`). */
  sampledPages: number;
  /** Of those, the pages whose bytes differed after the window. */
  dirtySampledPages: number;
  /** Pages dirtied in the window over the whole of RAM (scaled from the sample unless `exact`). */
  dirtyPages: number;
  pagesPerSec: number;
  /** dirtyPages × 4096 per second: what a checkpointing link must carry at least. */
  bytesPerSec: number;
  exact: boolean;
  /** Time spent copying and comparing (the sample's cost to the process). */
  workMs: number;
}

export interface DirtyRateOptions {
  windowMs: number;
  budgetBytes?: number;
  clock?: Clock;
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Samples `ram()` (a fresh view each slice: an engine's memory may move)
 * over `windowMs`. `memoryBytes` is the guest's RAM (a multiple of 4 KiB).
 */
export async function sampleDirtyRate(ram: () => Uint8Array, memoryBytes: number, opts: DirtyRateOptions): Promise<DirtyRateSample> {
  const clock = opts.clock ?? monotonicMs;
  if (!Number.isInteger(memoryBytes) || memoryBytes <= 0 || memoryBytes % PAGE_SIZE !== 0) throw new RangeError(`memory size ${memoryBytes} is not a positive multiple of ${PAGE_SIZE}`);
  const pages = memoryBytes / PAGE_SIZE;
  const blocks = Math.ceil(memoryBytes / BLOCK_BYTES);
  const stride = Math.max(1, Math.ceil(memoryBytes / (opts.budgetBytes ?? DEFAULT_DIRTY_SAMPLE_BUDGET_BYTES)));
  /** The sampled blocks' offsets in RAM and their lengths (the last block may be short). */
  const sampled: { at: number; length: number }[] = [];
  for (let b = 0; b < blocks; b += stride) sampled.push({ at: b * BLOCK_BYTES, length: Math.min(BLOCK_BYTES, memoryBytes - b * BLOCK_BYTES) });
  const sampledBytes = sampled.reduce((n, s) => n + s.length, 0);
  const copy = Buffer.allocUnsafe(sampledBytes);
  const blocksPerSlice = Math.max(1, Math.floor(SLICE_BYTES / BLOCK_BYTES));

  const view = (): Buffer => {
    const r = ram();
    if (r.length < memoryBytes) throw new RangeError(`RAM view of ${r.length} bytes is smaller than ${memoryBytes}`);
    return Buffer.from(r.buffer, r.byteOffset, memoryBytes);
  };

  let work = 0;
  const copyStart = clock();
  for (let i = 0, dst = 0; i < sampled.length; ) {
    const t = clock();
    const live = view();
    for (const end = Math.min(sampled.length, i + blocksPerSlice); i < end; i++) {
      const s = sampled[i] as { at: number; length: number };
      live.copy(copy, dst, s.at, s.at + s.length);
      dst += s.length;
    }
    work += clock() - t;
    await nextTurn();
  }
  const copyEnd = clock();
  // Counted from the copy's midpoint: the mean page's window is then at least the one asked for.
  const wait = (copyStart + copyEnd) / 2 + opts.windowMs - clock();
  if (wait > 0) await new Promise<void>((resolve) => setTimeout(resolve, wait));

  let dirty = 0;
  const compareStart = clock();
  for (let i = 0, src = 0; i < sampled.length; ) {
    const t = clock();
    const live = view();
    for (const end = Math.min(sampled.length, i + blocksPerSlice); i < end; i++) {
      const s = sampled[i] as { at: number; length: number };
      if (live.compare(copy, src, src + s.length, s.at, s.at + s.length) !== 0) {
        for (let off = 0; off < s.length; off += PAGE_SIZE) {
          if (live.compare(copy, src + off, src + off + PAGE_SIZE, s.at + off, s.at + off + PAGE_SIZE) !== 0) dirty++;
        }
      }
      src += s.length;
    }
    work += clock() - t;
    await nextTurn();
  }
  const compareEnd = clock();

  const windowMs = Math.max(1, (compareStart + compareEnd) / 2 - (copyStart + copyEnd) / 2);
  const sampledPages = sampledBytes / PAGE_SIZE;
  const dirtyPages = stride === 1 ? dirty : Math.round((dirty * pages) / sampledPages);
  const pagesPerSec = (dirtyPages * 1000) / windowMs;
  return {
    windowMs: Math.round(windowMs),
    pages,
    sampledPages,
    dirtySampledPages: dirty,
    dirtyPages,
    pagesPerSec: Math.round(pagesPerSec),
    bytesPerSec: Math.round(pagesPerSec * PAGE_SIZE),
    exact: stride === 1,
    workMs: Math.round(work * 10) / 10,
  };
}
