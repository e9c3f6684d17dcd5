/**
 * PAGE_DATA (docs/specs/stream.md §4.4): guest pages, NORMAL with contents
 * or ZERO without. Decoding validates everything the spec makes a reader
 * reject; applyPageData() copies a record into a RAM view.
 */
import { Buffer } from "node:buffer";
import { PAGE_SIZE } from "../engine/engine.js";
import { StreamError, type StreamLocation } from "./errors.js";
import { defineLayout } from "./layout.js";
import { describePfn, PAGE_TYPE, PAGE_TYPE_XTAB, pfnEntriesSize, readPfnEntry, writePfnEntry } from "./pfn-entry.js";
import { MAX_PAGES_PER_RECORD, PAGE_DATA_HEADER_SIZE } from "./record-types.js";

export const pageDataHeaderLayout = defineLayout("PAGE_DATA header", PAGE_DATA_HEADER_SIZE, {
  count: { offset: 0, type: "u32", meaning: "pfn entries in the record, 1..1024" },
  reserved: { offset: 4, type: "u32", meaning: "zero", reserved: true },
});

/** One PAGE_DATA record, decoded. */
export interface PageData {
  /** The pfns, in record order; each once. */
  readonly pfns: Uint32Array;
  /** PAGE_TYPE.NORMAL or PAGE_TYPE.ZERO per pfn. */
  readonly types: Uint8Array;
  /** The contents of the NORMAL pages, PAGE_SIZE octets each, in pfn order. */
  readonly data: Uint8Array;
}

/** Count and pfn array of a record: the part before the page contents. */
export function encodePageDataHead(pfns: Uint32Array, types: Uint8Array): Uint8Array {
  const count = pfns.length;
  const out = new Uint8Array(PAGE_DATA_HEADER_SIZE + pfnEntriesSize(count));
  pageDataHeaderLayout.encodeInto(out, 0, { count });
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (let i = 0; i < count; i++) writePfnEntry(view, PAGE_DATA_HEADER_SIZE + 8 * i, pfns[i] ?? 0, types[i] ?? PAGE_TYPE.NORMAL);
  return out;
}

/** Number of NORMAL entries (pages with contents). */
export function dataPageCount(types: Uint8Array): number {
  let n = 0;
  for (const t of types) if (t === PAGE_TYPE.NORMAL) n++;
  return n;
}

/**
 * Why a page list cannot be written as one record, or undefined when it can
 * (writer side: the same rules the reader enforces).
 */
export function pageDataProblem(pages: PageData, pageCount: number): string | undefined {
  const count = pages.pfns.length;
  if (count < 1 || count > MAX_PAGES_PER_RECORD) return `${count} pages, a record holds 1 to ${MAX_PAGES_PER_RECORD}`;
  if (pages.types.length !== count) return `${pages.types.length} types for ${count} pfns`;
  const seen = new Set<number>();
  for (let i = 0; i < count; i++) {
    const pfn = pages.pfns[i] ?? 0;
    const type = pages.types[i];
    if (type !== PAGE_TYPE.NORMAL && type !== PAGE_TYPE.ZERO) return `pfn ${pfn} has page type ${String(type)}`;
    if (pfn >= pageCount) return `pfn ${pfn} is outside guest memory (${pageCount} pages)`;
    if (seen.has(pfn)) return `pfn ${pfn} appears twice`;
    seen.add(pfn);
  }
  const expected = dataPageCount(pages.types) * PAGE_SIZE;
  if (pages.data.length !== expected) return `${pages.data.length} octets of page contents, expected ${expected}`;
  return undefined;
}

/** Decode and validate a PAGE_DATA body for a machine of `pageCount` pages. */
export function decodePageData(body: Uint8Array, where: StreamLocation, pageCount: number): PageData {
  const reserved = pageDataHeaderLayout.reservedViolation(body);
  if (reserved !== undefined) throw new StreamError("BAD_RESERVED", where, `${reserved} is not zero`);
  const { count } = pageDataHeaderLayout.decode(body);
  if (count < 1 || count > MAX_PAGES_PER_RECORD) {
    throw new StreamError("BAD_FIELD", where, `count ${count}, a record holds 1 to ${MAX_PAGES_PER_RECORD} pages`);
  }
  const dataStart = PAGE_DATA_HEADER_SIZE + pfnEntriesSize(count);
  if (body.length < dataStart) {
    throw new StreamError("BAD_LENGTH", where, `body_length ${body.length} is too short for ${count} pfn entries`);
  }
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const pfns = new Uint32Array(count);
  const types = new Uint8Array(count);
  const seen = new Set<number>();
  for (let i = 0; i < count; i++) {
    const entry = readPfnEntry(view, PAGE_DATA_HEADER_SIZE + 8 * i);
    if (entry.reserved !== 0) throw new StreamError("BAD_RESERVED", where, `pfn entry ${i}: reserved bits 59-52 are 0x${entry.reserved.toString(16)}`);
    if (entry.type === PAGE_TYPE_XTAB) throw new StreamError("BAD_PFN", where, `pfn ${describePfn(entry)} has type XTAB (invalid page)`);
    if (entry.type !== PAGE_TYPE.NORMAL && entry.type !== PAGE_TYPE.ZERO) {
      throw new StreamError("BAD_PFN", where, `pfn ${describePfn(entry)} has page type 0x${entry.type.toString(16)}, only NORMAL (0x0) and ZERO (0xe) exist`);
    }
    if (entry.pfnHigh !== 0 || entry.pfnLow >= pageCount) {
      throw new StreamError("BAD_PFN", where, `pfn ${describePfn(entry)} is outside guest memory (${pageCount} pages)`);
    }
    if (seen.has(entry.pfnLow)) throw new StreamError("BAD_PFN", where, `pfn ${entry.pfnLow} appears twice in one record`);
    seen.add(entry.pfnLow);
    pfns[i] = entry.pfnLow;
    types[i] = entry.type;
  }
  const expected = dataStart + dataPageCount(types) * PAGE_SIZE;
  if (body.length !== expected) {
    throw new StreamError("BAD_LENGTH", where, `body_length ${body.length}, but ${count} pfns with ${dataPageCount(types)} data pages need ${expected}`);
  }
  return { pfns, types, data: body.subarray(dataStart) };
}

function checkRam(ram: Uint8Array, pfn: number): void {
  if (ram.length % PAGE_SIZE !== 0 || (pfn + 1) * PAGE_SIZE > ram.length) {
    throw new StreamError("MISMATCH", undefined, `pfn ${pfn} does not fit a RAM view of ${ram.length} octets`);
  }
}

/** Copy a record's pages into guest RAM: NORMAL pages get their contents, ZERO pages are zeroed. */
export function applyPageData(pages: PageData, ram: Uint8Array): void {
  let dataIndex = 0;
  for (let i = 0; i < pages.pfns.length; i++) {
    const pfn = pages.pfns[i] ?? 0;
    checkRam(ram, pfn);
    const at = pfn * PAGE_SIZE;
    if (pages.types[i] === PAGE_TYPE.ZERO) {
      ram.fill(0, at, at + PAGE_SIZE);
    } else {
      ram.set(pages.data.subarray(dataIndex * PAGE_SIZE, (dataIndex + 1) * PAGE_SIZE), at);
      dataIndex++;
    }
  }
}

const ZERO_PAGE = Buffer.alloc(PAGE_SIZE);

/** True when the page at `offset` of `ram` is all zero (memcmp speed). */
export function isZeroPage(ram: Uint8Array, offset: number): boolean {
  return Buffer.from(ram.buffer, ram.byteOffset + offset, PAGE_SIZE).equals(ZERO_PAGE);
}

/**
 * One copy of the pages `pfns` of `ram`, in that order (pfns.length pages):
 * what a transfer sends and what the dirty tracker's shadow then holds must
 * be these same bytes, taken once, while another thread (a QEMU vCPU) may
 * be writing RAM. Into `into` (exactly pfns.length pages) when given, else a
 * new buffer.
 */
export function snapshotPages(ram: Uint8Array, pfns: Uint32Array, into?: Uint8Array): Uint8Array {
  if (into !== undefined && into.length !== pfns.length * PAGE_SIZE) throw new RangeError(`${into.length} bytes to copy ${pfns.length} pages into`);
  const out = into ?? new Uint8Array(pfns.length * PAGE_SIZE);
  for (let i = 0; i < pfns.length; i++) {
    const pfn = pfns[i] ?? 0;
    checkRam(ram, pfn);
    out.set(ram.subarray(pfn * PAGE_SIZE, (pfn + 1) * PAGE_SIZE), i * PAGE_SIZE);
  }
  return out;
}

/** One PageData for pfns (≤ 1024, distinct) from their snapshot: zero pages become ZERO entries without contents. */
export function pageDataFromSnapshot(pfns: Uint32Array, snapshot: Uint8Array): PageData {
  if (snapshot.length !== pfns.length * PAGE_SIZE) throw new RangeError(`snapshot of ${snapshot.length} bytes for ${pfns.length} pages`);
  const types = new Uint8Array(pfns.length);
  let dataPages = 0;
  for (let i = 0; i < pfns.length; i++) {
    if (isZeroPage(snapshot, i * PAGE_SIZE)) types[i] = PAGE_TYPE.ZERO;
    else dataPages++;
  }
  const data = new Uint8Array(dataPages * PAGE_SIZE);
  let k = 0;
  for (let i = 0; i < pfns.length; i++) {
    if (types[i] !== PAGE_TYPE.NORMAL) continue;
    data.set(snapshot.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE), k * PAGE_SIZE);
    k++;
  }
  return { pfns, types, data };
}

/** One PageData from RAM for pfns (≤ 1024, distinct, inside `ram`): pageDataFromSnapshot of snapshotPages. */
export function pageDataFromRam(ram: Uint8Array, pfns: Uint32Array): PageData {
  return pageDataFromSnapshot(pfns, snapshotPages(ram, pfns));
}
