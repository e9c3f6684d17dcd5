/**
 * writePages(): RAM to PAGE_DATA records, in batches of at most 1024 pages,
 * zero pages sent as ZERO entries without contents (issue 3, part 5).
 */
import { PAGE_SIZE } from "../engine/engine.js";
import { StreamError } from "./errors.js";
import { pageDataFromSnapshot, snapshotPages } from "./page-data.js";
import type { PageStaging, StagingLease } from "./page-staging.js";
import { PAGE_TYPE } from "./pfn-entry.js";
import { MAX_PAGES_PER_RECORD } from "./record-types.js";
import type { StreamWriter } from "./writer.js";

export interface PageWriteStats {
  /** Pages sent (NORMAL and ZERO). */
  pages: number;
  /** Of which sent as ZERO, without contents. */
  zeroPages: number;
  /** PAGE_DATA records written. */
  records: number;
  /** Octets handed to the sink. */
  bytes: number;
}

/**
 * Send the pages `pfns` of `ram` (the whole guest RAM of the writer's
 * machine) as PAGE_DATA records. Each page's contents are copied when its
 * batch is built, so the guest may keep running between batches (pre-copy:
 * pages it changes meanwhile are dirty and go again next round). A pfn may
 * not repeat within 1024 consecutive entries (each batch is one record).
 */
export async function writePages(
  writer: StreamWriter,
  ramSource: Uint8Array | (() => Uint8Array),
  pfns: Iterable<number>,
  /** Called right after each batch is copied, with the bytes copied (what is sent), before anything else runs (Engine.pagesCopied). */
  onCopied?: (pfns: Uint32Array, sent: Uint8Array) => void,
): Promise<PageWriteStats> {
  const machine = writer.machine;
  // A live engine's RAM view may be replaced between batches (emu: wasm memory growth): take it per batch.
  const ramNow = typeof ramSource === "function" ? ramSource : () => ramSource;
  const check = (ram: Uint8Array): Uint8Array => {
    if (ram.length !== machine.memoryBytes) {
      throw new StreamError("MISMATCH", undefined, `RAM view of ${ram.length} octets for a machine of ${machine.memoryBytes}`);
    }
    return ram;
  };
  check(ramNow());
  const stats: PageWriteStats = { pages: 0, zeroPages: 0, records: 0, bytes: 0 };
  const startBytes = writer.bytesWritten;
  let batch = new Uint32Array(MAX_PAGES_PER_RECORD);
  let fill = 0;
  const send = async (): Promise<void> => {
    const pfns = batch.subarray(0, fill);
    const sent = snapshotPages(check(ramNow()), pfns);
    const pages = pageDataFromSnapshot(pfns, sent);
    onCopied?.(pfns, sent);
    const zero = pages.types.reduce((n, t) => n + (t === PAGE_TYPE.ZERO ? 1 : 0), 0);
    await writer.writePageData(pages);
    stats.pages += fill;
    stats.zeroPages += zero;
    stats.records++;
    batch = new Uint32Array(MAX_PAGES_PER_RECORD);
    fill = 0;
    // A turn of the event loop per batch: a sink that does not push back (zero pages make small records) would
    // otherwise let a whole round run in one turn -- measured: 500-900 ms for a 160 MiB guest's checkpoint 0,
    // with the timers that carry heartbeats and lease renewals waiting behind it.
    await new Promise<void>((resolve) => setImmediate(resolve));
  };
  for (const pfn of pfns) {
    if (!Number.isInteger(pfn) || pfn < 0 || pfn >= machine.pageCount) {
      throw new StreamError("BAD_PFN", undefined, `pfn ${pfn} is outside guest memory (${machine.pageCount} pages)`);
    }
    batch[fill++] = pfn;
    if (fill === MAX_PAGES_PER_RECORD) await send();
  }
  if (fill > 0) await send();
  stats.bytes = writer.bytesWritten - startBytes;
  return stats;
}

/**
 * A checkpoint's pages copied out of RAM at once (stagePages), to be written
 * later (writeStagedPages): Xen's staging buffer. The copy is taken while
 * the guest is paused; the guest may resume before the records are written.
 */
export interface StagedPages {
  readonly batches: readonly { pfns: Uint32Array; sent: Uint8Array }[];
  readonly pages: number;
  /** The staging buffers the copies live in, given back by writeStagedPages (or by the caller that drops them). */
  readonly lease?: StagingLease;
}

/**
 * Copies the pages `pfns` of `ram` now, in batches of at most 1024 pages
 * (each batch one PAGE_DATA record later); `onCopied` as for writePages,
 * per batch, as it is copied. Same checks as writePages. With `staging`,
 * the copies go into its reused buffers until writeStagedPages is done.
 */
export function stagePages(
  machine: { memoryBytes: number; pageCount: number },
  ram: Uint8Array,
  pfns: ArrayLike<number>,
  onCopied?: (pfns: Uint32Array, sent: Uint8Array) => void,
  staging?: PageStaging,
): StagedPages {
  if (ram.length !== machine.memoryBytes) {
    throw new StreamError("MISMATCH", undefined, `RAM view of ${ram.length} octets for a machine of ${machine.memoryBytes}`);
  }
  const batches: { pfns: Uint32Array; sent: Uint8Array }[] = [];
  const lease = staging?.acquire(ram);
  try {
    for (let first = 0, index = 0; first < pfns.length; first += MAX_PAGES_PER_RECORD, index++) {
      const batch = new Uint32Array(Math.min(MAX_PAGES_PER_RECORD, pfns.length - first));
      for (let i = 0; i < batch.length; i++) {
        const pfn = pfns[first + i] as number;
        if (!Number.isInteger(pfn) || pfn < 0 || pfn >= machine.pageCount) {
          throw new StreamError("BAD_PFN", undefined, `pfn ${pfn} is outside guest memory (${machine.pageCount} pages)`);
        }
        batch[i] = pfn;
      }
      const sent = snapshotPages(ram, batch, lease?.buffer(index, batch.length));
      onCopied?.(batch, sent);
      batches.push({ pfns: batch, sent });
    }
  } catch (err) {
    lease?.release();
    throw err;
  }
  return { batches, pages: pfns.length, ...(lease ? { lease } : {}) };
}

/** The staged pages as PAGE_DATA records, a turn of the event loop after each (as writePages). */
export async function writeStagedPages(writer: StreamWriter, staged: StagedPages): Promise<PageWriteStats> {
  const stats: PageWriteStats = { pages: 0, zeroPages: 0, records: 0, bytes: 0 };
  const startBytes = writer.bytesWritten;
  try {
    for (const { pfns, sent } of staged.batches) {
      // Its own copy of the contents (pageDataFromSnapshot): the record outlives the staging buffer.
      const pages = pageDataFromSnapshot(pfns, sent);
      await writer.writePageData(pages);
      stats.pages += pfns.length;
      stats.zeroPages += pages.types.reduce((n, t) => n + (t === PAGE_TYPE.ZERO ? 1 : 0), 0);
      stats.records++;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  } finally {
    staged.lease?.release();
  }
  stats.bytes = writer.bytesWritten - startBytes;
  return stats;
}

/** Every pfn of a machine of `pageCount` pages, ascending (a save file, migration round 0). */
export function* allPfns(pageCount: number): Generator<number, void, undefined> {
  for (let pfn = 0; pfn < pageCount; pfn++) yield pfn;
}

/** Octets of guest memory the stats stand for (pages × 4096), for throughput figures. */
export function guestBytes(stats: PageWriteStats): number {
  return stats.pages * PAGE_SIZE;
}
