/**
 * The records with which a re-protection skips the hash compare of the
 * disks (docs/specs/stream.md §3.16-§3.18; the logs are
 * docs/specs/activity-log.md), all optional, in the COLO range:
 *
 *   DISK_PLAN   (0x80000109) forward, before the first MEMORY_STREAM, instead of a disk's DISK_INFO:
 *                            the chunks the two images' logs say may differ
 *   DISK_LOG    (0x8000010A) back channel, its first record: the session's lineage and the
 *                            secondary's activity log of each writable disk
 *   DISK_SYNCED (0x8000010B) back channel: the secondary's images hold checkpoint N durably
 */
import { StreamError, type StreamLocation } from "./errors.js";
import { defineLayout } from "./layout.js";
import { MAX_DISK_CHUNKS, MAX_DISKS } from "./colo-records.js";
import { MAX_RECORD_BODY } from "./framing.js";

export const LINEAGE_OCTETS = 16;
/** DISK_PLAN fixed part: u32 disk, u32 chunk_size, u64 size, u32 count, u32 reserved; then count u32 chunk indexes. */
export const DISK_PLAN_SUBHEADER = 24;
export const MAX_DISK_PLAN_BODY = DISK_PLAN_SUBHEADER + 4 * MAX_DISK_CHUNKS;
/** DISK_LOG fixed part: lineage, u32 disk_count, u32 reserved; then disk_count entries. */
export const DISK_LOG_SUBHEADER = 24;
/** A DISK_LOG entry's fixed part; its chunk list follows, padded to 8 octets. */
export const DISK_LOG_ENTRY_HEAD = 56;
export const MAX_DISK_LOG_BODY = MAX_RECORD_BODY;
/** DISK_SYNCED body: u64 checkpoint. */
export const DISK_SYNCED_BODY = 8;
/** DISK_LOG entry flags bit 0: the image has a readable log (the entry's other fields are its). */
export const DISK_LOG_FLAG_PRESENT = 1;
/** Log kinds (activity-log.md): 1 primary, 2 replica, 3 survivor. */
export const DISK_LOG_KINDS = [1, 2, 3] as const;

export const diskPlanHeadLayout = defineLayout("DISK_PLAN sub-header", DISK_PLAN_SUBHEADER, {
  disk: { offset: 0, type: "u32", meaning: "index of the disk, 0 to 63" },
  chunkSize: { offset: 4, type: "u32", meaning: "octets per chunk, a power of two from 4096 to 64 MiB" },
  size: { offset: 8, type: "u64", meaning: "octets in the primary's image, 1 to 2^53-1" },
  count: { offset: 16, type: "u32", meaning: "chunk indexes that follow, ascending" },
  reserved: { offset: 20, type: "u32", meaning: "0", reserved: true },
});

export const diskLogHeadLayout = defineLayout("DISK_LOG sub-header", DISK_LOG_SUBHEADER, {
  lineage: { offset: 0, type: { octets: LINEAGE_OCTETS }, meaning: "16 random octets naming the new session" },
  diskCount: { offset: 16, type: "u32", meaning: "entries that follow, 0 to 64" },
  reserved: { offset: 20, type: "u32", meaning: "0", reserved: true },
});

export const diskLogEntryLayout = defineLayout("DISK_LOG entry", DISK_LOG_ENTRY_HEAD, {
  disk: { offset: 0, type: "u32", meaning: "index of the disk, 0 to 63, ascending across entries" },
  flags: { offset: 4, type: "u32", meaning: "bit 0: a log is present; other bits: later revisions' (a primary that does not know one hashes)" },
  lineage: { offset: 8, type: { octets: LINEAGE_OCTETS }, meaning: "the log's lineage (zero without a log)" },
  kind: { offset: 24, type: "u32", meaning: "1 primary, 2 replica, 3 survivor (0 without a log)" },
  chunkSize: { offset: 28, type: "u32", meaning: "the log's chunk size (0 without a log)" },
  seq: { offset: 32, type: "u64", meaning: "the checkpoint the log's chunks are relative to" },
  size: { offset: 40, type: "u64", meaning: "the image's size as the log says (0 without a log)" },
  count: { offset: 48, type: "u32", meaning: "chunk indexes that follow (then 4 zero octets when odd)" },
  reserved: { offset: 52, type: "u32", meaning: "0", reserved: true },
});

export const diskSyncedLayout = defineLayout("DISK_SYNCED body", DISK_SYNCED_BODY, {
  checkpoint: { offset: 0, type: "u64", meaning: "the last checkpoint the secondary's images hold durably (fdatasync'ed)" },
});

export interface DiskPlan {
  readonly disk: number;
  readonly chunkSize: number;
  readonly size: number;
  /** Ascending chunk indexes: the chunks that may differ. */
  readonly chunks: readonly number[];
}

export interface DiskLogEntry {
  readonly disk: number;
  readonly flags: number;
  readonly lineage: Uint8Array;
  /** 1 primary, 2 replica, 3 survivor; 0 without a log. */
  readonly kind: number;
  readonly chunkSize: number;
  readonly seq: number;
  readonly size: number;
  readonly chunks: readonly number[];
}

export interface DiskLogReport {
  /** The new session's lineage, chosen by the secondary. */
  readonly lineage: Uint8Array;
  readonly disks: readonly DiskLogEntry[];
}

export interface DiskSynced {
  readonly checkpoint: number;
}

const MAX_U53 = BigInt(Number.MAX_SAFE_INTEGER);

function pow2Chunk(c: number): boolean {
  return Number.isInteger(c) && c >= 4096 && c <= 64 * 2 ** 20 && (c & (c - 1)) === 0;
}

/** A chunk list's problem for an image of `size` octets in chunks of `chunkSize`. */
function chunkListProblem(chunks: readonly number[], size: number, chunkSize: number): string | undefined {
  const n = Math.ceil(size / chunkSize);
  if (n > MAX_DISK_CHUNKS) return `${n} chunks, at most ${MAX_DISK_CHUNKS}`;
  if (chunks.length > n) return `${chunks.length} chunk indexes for ${n} chunks`;
  let last = -1;
  for (const c of chunks) {
    if (!Number.isInteger(c) || c < 0 || c >= n) return `chunk index ${c} outside 0..${n - 1}`;
    if (c <= last) return `chunk index ${c} after ${last}: the list must be strictly ascending`;
    last = c;
  }
  return undefined;
}

function diskProblem(disk: number): string | undefined {
  return Number.isInteger(disk) && disk >= 0 && disk < MAX_DISKS ? undefined : `disk index ${disk} outside 0..${MAX_DISKS - 1}`;
}

function writeChunks(out: Uint8Array, at: number, chunks: readonly number[]): void {
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  chunks.forEach((c, n) => view.setUint32(at + 4 * n, c, true));
}

function readChunks(body: Uint8Array, at: number, count: number): number[] {
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const out: number[] = [];
  for (let n = 0; n < count; n++) out.push(view.getUint32(at + 4 * n, true));
  return out;
}

// ---- DISK_PLAN ----

export function diskPlanProblem(p: DiskPlan): string | undefined {
  if (!pow2Chunk(p.chunkSize)) return `chunk_size ${p.chunkSize} is not a power of two from 4096 to 64 MiB`;
  if (!Number.isSafeInteger(p.size) || p.size < 1) return `size ${p.size} is not a positive integer below 2^53`;
  return chunkListProblem(p.chunks, p.size, p.chunkSize) ?? diskProblem(p.disk);
}

export function encodeDiskPlan(p: DiskPlan): Uint8Array {
  const out = new Uint8Array(DISK_PLAN_SUBHEADER + 4 * p.chunks.length);
  diskPlanHeadLayout.encodeInto(out, 0, { disk: p.disk, chunkSize: p.chunkSize, size: BigInt(p.size), count: p.chunks.length });
  writeChunks(out, DISK_PLAN_SUBHEADER, p.chunks);
  return out;
}

export function decodeDiskPlan(body: Uint8Array, where: StreamLocation): DiskPlan {
  const h = diskPlanHeadLayout.decode(body);
  const reserved = diskPlanHeadLayout.reservedViolation(body);
  if (reserved !== undefined) throw new StreamError("BAD_RESERVED", where, `${reserved} field is not zero`);
  if (body.length !== DISK_PLAN_SUBHEADER + 4 * h.count) throw new StreamError("BAD_LENGTH", where, `count ${h.count} needs ${DISK_PLAN_SUBHEADER + 4 * h.count} octets, the body has ${body.length}`);
  if (h.size > MAX_U53) throw new StreamError("BAD_FIELD", where, `size ${h.size} is 2^53 or more`);
  const p: DiskPlan = { disk: h.disk, chunkSize: h.chunkSize, size: Number(h.size), chunks: readChunks(body, DISK_PLAN_SUBHEADER, h.count) };
  const problem = diskPlanProblem(p);
  if (problem) throw new StreamError("BAD_FIELD", where, problem);
  return p;
}

// ---- DISK_LOG ----

function entryBytes(count: number): number {
  return DISK_LOG_ENTRY_HEAD + 4 * count + (count % 2 === 1 ? 4 : 0);
}

export function diskLogEntryProblem(e: DiskLogEntry): string | undefined {
  const d = diskProblem(e.disk);
  if (d) return d;
  if (!Number.isInteger(e.flags) || e.flags < 0 || e.flags > 0xffff_ffff) return `disk ${e.disk}: flags ${e.flags} is not a u32`;
  if (e.lineage.length !== LINEAGE_OCTETS) return `disk ${e.disk}: a lineage of ${e.lineage.length} octets`;
  if ((e.flags & DISK_LOG_FLAG_PRESENT) === 0) {
    const empty = e.kind === 0 && e.chunkSize === 0 && e.seq === 0 && e.size === 0 && e.chunks.length === 0 && e.lineage.every((b) => b === 0);
    return empty ? undefined : `disk ${e.disk}: no log (flags bit 0 clear) but lineage, kind, chunk_size, seq, size or count not zero`;
  }
  if (!(DISK_LOG_KINDS as readonly number[]).includes(e.kind)) return `disk ${e.disk}: unknown log kind ${e.kind}`;
  if (!pow2Chunk(e.chunkSize)) return `disk ${e.disk}: chunk_size ${e.chunkSize} is not a power of two from 4096 to 64 MiB`;
  if (!Number.isSafeInteger(e.size) || e.size < 1) return `disk ${e.disk}: size ${e.size} is not a positive integer below 2^53`;
  if (!Number.isSafeInteger(e.seq) || e.seq < 0) return `disk ${e.disk}: seq ${e.seq} is not an integer in 0..2^53-1`;
  const c = chunkListProblem(e.chunks, e.size, e.chunkSize);
  return c ? `disk ${e.disk}: ${c}` : undefined;
}

export function diskLogProblem(r: DiskLogReport): string | undefined {
  if (r.lineage.length !== LINEAGE_OCTETS) return `a lineage of ${r.lineage.length} octets, not ${LINEAGE_OCTETS}`;
  if (r.disks.length > MAX_DISKS) return `${r.disks.length} disks, at most ${MAX_DISKS}`;
  let last = -1;
  let size = DISK_LOG_SUBHEADER;
  for (const e of r.disks) {
    const p = diskLogEntryProblem(e);
    if (p) return p;
    if (e.disk <= last) return `disk ${e.disk} after disk ${last}: entries must be strictly ascending by disk`;
    last = e.disk;
    size += entryBytes(e.chunks.length);
  }
  if (size > MAX_DISK_LOG_BODY) return `${size} octets, at most ${MAX_DISK_LOG_BODY}`;
  return undefined;
}

export function encodeDiskLog(r: DiskLogReport): Uint8Array {
  const out = new Uint8Array(r.disks.reduce((n, e) => n + entryBytes(e.chunks.length), DISK_LOG_SUBHEADER));
  diskLogHeadLayout.encodeInto(out, 0, { lineage: r.lineage, diskCount: r.disks.length });
  let at = DISK_LOG_SUBHEADER;
  for (const e of r.disks) {
    diskLogEntryLayout.encodeInto(out, at, {
      disk: e.disk,
      flags: e.flags,
      lineage: e.lineage,
      kind: e.kind,
      chunkSize: e.chunkSize,
      seq: BigInt(e.seq),
      size: BigInt(e.size),
      count: e.chunks.length,
    });
    writeChunks(out, at + DISK_LOG_ENTRY_HEAD, e.chunks);
    at += entryBytes(e.chunks.length);
  }
  return out;
}

export function decodeDiskLog(body: Uint8Array, where: StreamLocation): DiskLogReport {
  const h = diskLogHeadLayout.decode(body);
  const reserved = diskLogHeadLayout.reservedViolation(body);
  if (reserved !== undefined) throw new StreamError("BAD_RESERVED", where, `${reserved} field is not zero`);
  if (h.diskCount > MAX_DISKS) throw new StreamError("BAD_FIELD", where, `disk_count ${h.diskCount}, at most ${MAX_DISKS}`);
  const disks: DiskLogEntry[] = [];
  let at = DISK_LOG_SUBHEADER;
  for (let i = 0; i < h.diskCount; i++) {
    if (at + DISK_LOG_ENTRY_HEAD > body.length) throw new StreamError("BAD_LENGTH", where, `the body ends inside entry ${i}'s header (${body.length} octets)`);
    const head = body.subarray(at, at + DISK_LOG_ENTRY_HEAD);
    const e = diskLogEntryLayout.decode(head);
    const r = diskLogEntryLayout.reservedViolation(head);
    if (r !== undefined) throw new StreamError("BAD_RESERVED", where, `entry ${i}: ${r} field is not zero`);
    const length = entryBytes(e.count);
    if (at + length > body.length) throw new StreamError("BAD_LENGTH", where, `entry ${i} names ${e.count} chunks (${length} octets) but ${body.length - at} octets are left`);
    if (e.count % 2 === 1 && body.subarray(at + length - 4, at + length).some((b) => b !== 0)) throw new StreamError("BAD_RESERVED", where, `entry ${i}: the padding after its chunk list is not zero`);
    if (e.seq > MAX_U53 || e.size > MAX_U53) throw new StreamError("BAD_FIELD", where, `entry ${i}: seq or size is 2^53 or more`);
    disks.push({
      disk: e.disk,
      flags: e.flags,
      lineage: Uint8Array.from(e.lineage),
      kind: e.kind,
      chunkSize: e.chunkSize,
      seq: Number(e.seq),
      size: Number(e.size),
      chunks: readChunks(body, at + DISK_LOG_ENTRY_HEAD, e.count),
    });
    at += length;
  }
  if (at !== body.length) throw new StreamError("BAD_LENGTH", where, `${body.length - at} octets after the last entry`);
  const report: DiskLogReport = { lineage: Uint8Array.from(h.lineage), disks };
  const problem = diskLogProblem(report);
  if (problem) throw new StreamError("BAD_FIELD", where, problem);
  return report;
}

// ---- DISK_SYNCED ----

export function diskSyncedProblem(s: DiskSynced): string | undefined {
  return Number.isSafeInteger(s.checkpoint) && s.checkpoint >= 0 ? undefined : `checkpoint ${s.checkpoint} is not an integer in 0..2^53-1`;
}

export function encodeDiskSynced(s: DiskSynced): Uint8Array {
  return diskSyncedLayout.encode({ checkpoint: BigInt(s.checkpoint) });
}

export function decodeDiskSynced(body: Uint8Array, where: StreamLocation): DiskSynced {
  const { checkpoint } = diskSyncedLayout.decode(body);
  if (checkpoint > MAX_U53) throw new StreamError("BAD_FIELD", where, `checkpoint ${checkpoint} is 2^53 or more`);
  return { checkpoint: Number(checkpoint) };
}
