/**
 * The u64 pfn entry of PAGE_DATA and CHECKPOINT_DIRTY_PFN_LIST (Xen's layout,
 * docs/specs/stream.md §4.4):
 *   bits 63-60  page type (XEN_DOMCTL_PFINFO_* of xen/include/public/domctl.h, shifted by 32)
 *   bits 59-52  reserved, zero
 *   bits 51-0   pfn
 * Read and written as two little-endian u32 halves: every pfn we accept is
 * below 2^32 (memory ≤ 2^44), so bits 51-32 of a valid entry are zero.
 */
import { PFN_ENTRY_SIZE } from "./record-types.js";

/** Page types this format uses (Xen's XEN_DOMCTL_PFINFO_* values). */
export const PAGE_TYPE = {
  /** XEN_DOMCTL_PFINFO_NOTAB: a normal page, 4096 octets of contents follow. */
  NORMAL: 0x0,
  /** XEN_DOMCTL_PFINFO_XALLOC: here, a page of zeros, sent without contents. */
  ZERO: 0xe,
} as const;

/** XEN_DOMCTL_PFINFO_XTAB: an invalid page; a reader rejects it. */
export const PAGE_TYPE_XTAB = 0xf;

const TYPE_SHIFT_IN_HIGH = 28;
const RESERVED_SHIFT_IN_HIGH = 20;
const RESERVED_MASK = 0xff;
const PFN_HIGH_MASK = 0xfffff;

export interface PfnEntry {
  /** Bits 63-60. */
  type: number;
  /** Bits 59-52 (must be zero). */
  reserved: number;
  /** Bits 51-32 of the pfn: non-zero means pfn ≥ 2^32, always outside guest memory. */
  pfnHigh: number;
  /** Bits 31-0 of the pfn. */
  pfnLow: number;
}

export function readPfnEntry(view: DataView, at: number): PfnEntry {
  const low = view.getUint32(at, true);
  const high = view.getUint32(at + 4, true);
  return {
    type: high >>> TYPE_SHIFT_IN_HIGH,
    reserved: (high >>> RESERVED_SHIFT_IN_HIGH) & RESERVED_MASK,
    pfnHigh: high & PFN_HIGH_MASK,
    pfnLow: low,
  };
}

/** Write an entry for a pfn below 2^32. */
export function writePfnEntry(view: DataView, at: number, pfn: number, type: number): void {
  view.setUint32(at, pfn >>> 0, true);
  view.setUint32(at + 4, (type << TYPE_SHIFT_IN_HIGH) >>> 0, true);
}

export function pfnEntriesSize(count: number): number {
  return count * PFN_ENTRY_SIZE;
}

/** Human-readable pfn for messages, including the high bits when set. */
export function describePfn(entry: PfnEntry): string {
  return entry.pfnHigh === 0 ? String(entry.pfnLow) : String(entry.pfnHigh * 2 ** 32 + entry.pfnLow);
}
