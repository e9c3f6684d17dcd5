/**
 * COLO checkpoint records (docs/specs/stream.md §3.5, §4.5):
 * CHECKPOINT_STATE control messages (toolstack layer) and the secondary's
 * CHECKPOINT_DIRTY_PFN_LIST (memory layer, back channel). CHECKPOINT and
 * CHECKPOINT_END are empty and need no codec.
 */
import { StreamError, type StreamLocation } from "./errors.js";
import { defineLayout } from "./layout.js";
import { describePfn, pfnEntriesSize, readPfnEntry, writePfnEntry } from "./pfn-entry.js";
import { CHECKPOINT_STATE_BODY, MAX_DIRTY_PFNS_PER_RECORD, PFN_ENTRY_SIZE } from "./record-types.js";

/** control_id values, Xen's (libxl_sr_stream_format.h, libxl_sr_colo_context). */
export const CHECKPOINT_CONTROL_ID = {
  NEW: 0,
  SVM_SUSPENDED: 1,
  SVM_READY: 2,
  SVM_RESUMED: 3,
} as const;

export type CheckpointControl = keyof typeof CHECKPOINT_CONTROL_ID;

/** NEW goes primary→secondary (image streams); the rest secondary→primary (back channel). */
export function isBackChannelControl(control: CheckpointControl): boolean {
  return control !== "NEW";
}

export const checkpointStateLayout = defineLayout("CHECKPOINT_STATE body", CHECKPOINT_STATE_BODY, {
  controlId: { offset: 0, type: "u32", meaning: "0 NEW, 1 SVM_SUSPENDED, 2 SVM_READY, 3 SVM_RESUMED" },
});

export function encodeCheckpointState(control: CheckpointControl): Uint8Array {
  return checkpointStateLayout.encode({ controlId: CHECKPOINT_CONTROL_ID[control] });
}

export function decodeCheckpointState(body: Uint8Array, where: StreamLocation): CheckpointControl {
  const { controlId } = checkpointStateLayout.decode(body);
  for (const [name, id] of Object.entries(CHECKPOINT_CONTROL_ID)) if (id === controlId) return name as CheckpointControl;
  throw new StreamError("BAD_FIELD", where, `unknown control_id ${controlId}`);
}

/**
 * Why `pfns` cannot be one dirty-list record continuing after `previous`
 * (the last pfn of the part so far, or -1), or undefined.
 */
export function dirtyPfnListProblem(pfns: Uint32Array, pageCount: number, previous: number): string | undefined {
  if (pfns.length > MAX_DIRTY_PFNS_PER_RECORD) return `${pfns.length} pfns, a record holds at most ${MAX_DIRTY_PFNS_PER_RECORD}`;
  let last = previous;
  for (const pfn of pfns) {
    if (pfn >= pageCount) return `pfn ${pfn} is outside guest memory (${pageCount} pages)`;
    if (pfn <= last) return `pfn ${pfn} after ${last}: the list must be strictly ascending`;
    last = pfn;
  }
  return undefined;
}

export function encodeDirtyPfnList(pfns: Uint32Array): Uint8Array {
  const out = new Uint8Array(pfnEntriesSize(pfns.length));
  const view = new DataView(out.buffer);
  pfns.forEach((pfn, i) => writePfnEntry(view, i * PFN_ENTRY_SIZE, pfn, 0));
  return out;
}

/** Decode a dirty list whose entries continue a part whose last pfn was `previous` (-1 at the start). */
export function decodeDirtyPfnList(body: Uint8Array, where: StreamLocation, pageCount: number, previous: number): Uint32Array {
  if (body.length % PFN_ENTRY_SIZE !== 0) {
    throw new StreamError("BAD_LENGTH", where, `body_length ${body.length} is not a multiple of ${PFN_ENTRY_SIZE}`);
  }
  const count = body.length / PFN_ENTRY_SIZE;
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const pfns = new Uint32Array(count);
  let last = previous;
  for (let i = 0; i < count; i++) {
    const entry = readPfnEntry(view, i * PFN_ENTRY_SIZE);
    if (entry.type !== 0 || entry.reserved !== 0) {
      throw new StreamError("BAD_RESERVED", where, `pfn entry ${i}: bits 63-52 must be zero`);
    }
    if (entry.pfnHigh !== 0 || entry.pfnLow >= pageCount) {
      throw new StreamError("BAD_PFN", where, `pfn ${describePfn(entry)} is outside guest memory (${pageCount} pages)`);
    }
    if (entry.pfnLow <= last) {
      throw new StreamError("BAD_PFN", where, `pfn ${entry.pfnLow} after ${last}: the dirty list must be strictly ascending`);
    }
    last = entry.pfnLow;
    pfns[i] = entry.pfnLow;
  }
  return pfns;
}
