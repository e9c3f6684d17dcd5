/**
 * COLO compare-mode and disk-replication records (docs/specs/stream.md
 * §3.8-§3.12), all in the toolstack layer's COLO replication-control range
 * 0x100-0x1FF:
 *
 *   REPLICATION_MODE (0x101)  forward, before the first MEMORY_STREAM
 *   NET_FRAME        (0x102)  both ways: mirrored input (P→S), SVM output (S→P)
 *   DISK_WRITE       (0x103)  forward: one PVM write (or an initial-copy chunk)
 *   DISK_CHECKPOINT  (0x104)  forward, inside a checkpoint: the last write it covers
 *   DISK_INFO        (0x105)  forward, before the first MEMORY_STREAM: image size and chunk hashes
 *   DISK_WANT        (0x106)  back channel: the chunks the secondary needs copied
 *   CHECKPOINT_REQUEST (0x107) back channel: the secondary asks for a checkpoint (its disk backlog)
 */
import type { StreamLocation } from "./errors.js";
import { StreamError } from "./errors.js";
import { defineLayout } from "./layout.js";

/** REPLICATION_MODE body: u32 mode, u32 flags. */
export const REPLICATION_MODE_BODY = 8;
export const REPLICATION_MODE = { REMUS: 1, COMPARE: 2 } as const;
export type ReplicationModeName = "remus" | "compare";
/** flags bit 0: the VM's writable disks are replicated (DISK_* records follow). */
export const REPLICATION_FLAG_DISKS = 1;

/** NET_FRAME fixed part: u32 direction, u32 frame_length. */
export const NET_FRAME_SUBHEADER = 8;
/** Ethernet header (14) .. a 64 KiB IP packet plus its Ethernet header. */
export const MIN_NET_FRAME = 14;
export const MAX_NET_FRAME = 65536 + 14;
export const NET_DIRECTION = { MIRRORED_INPUT: 1, SECONDARY_OUTPUT: 2 } as const;
export type NetDirection = "mirrored-input" | "secondary-output";

/** DISK_WRITE fixed part: u32 disk, u32 reserved, u64 seq, u64 offset. */
export const DISK_WRITE_SUBHEADER = 24;
/** Data of one DISK_WRITE: 1 octet to 4 MiB. */
export const MAX_DISK_WRITE_DATA = 4 * 2 ** 20;
/** DISK_CHECKPOINT body: u32 disk, u32 reserved, u64 upto_seq. */
export const DISK_CHECKPOINT_BODY = 16;
/** DISK_INFO fixed part: u32 disk, u32 chunk_size, u64 size; then one SHA-256 per chunk. */
export const DISK_INFO_SUBHEADER = 16;
export const SHA256_OCTETS = 32;
/** At most 2^20 chunks (1 TiB at 1 MiB chunks). */
export const MAX_DISK_CHUNKS = 2 ** 20;
/** DISK_WANT fixed part: u32 disk, u32 count; then count u32 chunk indexes, ascending. */
export const DISK_WANT_SUBHEADER = 8;
/** CHECKPOINT_REQUEST body: u32 reason, u32 disk. */
export const CHECKPOINT_REQUEST_BODY = 8;
/** CHECKPOINT_REQUEST reasons (spec §3.13). */
export const CHECKPOINT_REQUEST_REASON = { DISK_BACKLOG: 1 } as const;
export type CheckpointRequestReason = "disk-backlog";
/** Disks per VM: xl's vdev letters hda..hdd map to indexes 0..3; we allow up to 64. */
export const MAX_DISKS = 64;

export const replicationModeLayout = defineLayout("REPLICATION_MODE body", REPLICATION_MODE_BODY, {
  mode: { offset: 0, type: "u32", meaning: "1 Remus (SVM paused, output held per checkpoint), 2 COLO compare (SVM runs)" },
  flags: { offset: 4, type: "u32", meaning: "bit 0: disks replicated; other bits 0" },
});

export const netFrameHeadLayout = defineLayout("NET_FRAME sub-header", NET_FRAME_SUBHEADER, {
  direction: { offset: 0, type: "u32", meaning: "1 mirrored input (primary→secondary), 2 secondary VM output (secondary→primary)" },
  frameLength: { offset: 4, type: "u32", meaning: "octets of the Ethernet frame that follows" },
});

export const diskWriteHeadLayout = defineLayout("DISK_WRITE sub-header", DISK_WRITE_SUBHEADER, {
  disk: { offset: 0, type: "u32", meaning: "index of the disk in the VM config's disk list" },
  reserved: { offset: 4, type: "u32", meaning: "0", reserved: true },
  seq: { offset: 8, type: "u64", meaning: "0: an initial-copy chunk; else the PVM write's number (1, 2, ... per disk)" },
  offset: { offset: 16, type: "u64", meaning: "byte offset in the disk" },
});

export const diskCheckpointLayout = defineLayout("DISK_CHECKPOINT body", DISK_CHECKPOINT_BODY, {
  disk: { offset: 0, type: "u32", meaning: "index of the disk" },
  reserved: { offset: 4, type: "u32", meaning: "0", reserved: true },
  uptoSeq: { offset: 8, type: "u64", meaning: "the last PVM write this checkpoint covers" },
});

export const diskInfoHeadLayout = defineLayout("DISK_INFO sub-header", DISK_INFO_SUBHEADER, {
  disk: { offset: 0, type: "u32", meaning: "index of the disk" },
  chunkSize: { offset: 4, type: "u32", meaning: "octets per hashed chunk, a power of two from 4096 to 64 MiB" },
  size: { offset: 8, type: "u64", meaning: "octets in the disk image" },
});

export const checkpointRequestLayout = defineLayout("CHECKPOINT_REQUEST body", CHECKPOINT_REQUEST_BODY, {
  reason: { offset: 0, type: "u32", meaning: "1 disk backlog: the secondary's replication data of one disk passed its limit" },
  disk: { offset: 4, type: "u32", meaning: "index of the disk (reason 1)" },
});

export const diskWantHeadLayout = defineLayout("DISK_WANT sub-header", DISK_WANT_SUBHEADER, {
  disk: { offset: 0, type: "u32", meaning: "index of the disk" },
  count: { offset: 4, type: "u32", meaning: "number of chunk indexes that follow" },
});

export interface ReplicationMode {
  readonly mode: ReplicationModeName;
  readonly disks: boolean;
}
export interface NetFrame {
  readonly direction: NetDirection;
  readonly frame: Uint8Array;
}
export interface DiskWrite {
  readonly disk: number;
  readonly seq: number;
  readonly offset: number;
  readonly data: Uint8Array;
}
export interface DiskCheckpoint {
  readonly disk: number;
  readonly uptoSeq: number;
}
export interface DiskInfo {
  readonly disk: number;
  readonly chunkSize: number;
  readonly size: number;
  /** One SHA-256 per chunk, in order. */
  readonly chunkHashes: readonly Uint8Array[];
}
export interface DiskWant {
  readonly disk: number;
  /** Ascending chunk indexes. */
  readonly chunks: readonly number[];
}
export interface CheckpointRequest {
  readonly reason: CheckpointRequestReason;
  /** The disk whose backlog passed its limit. */
  readonly disk: number;
}

const MAX_U53 = BigInt(Number.MAX_SAFE_INTEGER);

function u53(value: bigint, field: string, where: StreamLocation): number {
  if (value > MAX_U53) throw new StreamError("BAD_FIELD", where, `${field} ${value} is 2^53 or more`);
  return Number(value);
}

function diskIndexProblem(disk: number): string | undefined {
  return Number.isInteger(disk) && disk >= 0 && disk < MAX_DISKS ? undefined : `disk index ${disk} outside 0..${MAX_DISKS - 1}`;
}

// ---- REPLICATION_MODE ----

export function encodeReplicationMode(m: ReplicationMode): Uint8Array {
  return replicationModeLayout.encode({ mode: m.mode === "remus" ? REPLICATION_MODE.REMUS : REPLICATION_MODE.COMPARE, flags: m.disks ? REPLICATION_FLAG_DISKS : 0 });
}

export function decodeReplicationMode(body: Uint8Array, where: StreamLocation): ReplicationMode {
  const { mode, flags } = replicationModeLayout.decode(body);
  if (mode !== REPLICATION_MODE.REMUS && mode !== REPLICATION_MODE.COMPARE) throw new StreamError("BAD_FIELD", where, `unknown mode ${mode}`);
  if ((flags & ~REPLICATION_FLAG_DISKS) !== 0) throw new StreamError("BAD_RESERVED", where, `unknown flags 0x${flags.toString(16)}`);
  return { mode: mode === REPLICATION_MODE.REMUS ? "remus" : "compare", disks: (flags & REPLICATION_FLAG_DISKS) !== 0 };
}

// ---- NET_FRAME ----

export function netFrameProblem(f: NetFrame): string | undefined {
  if (f.frame.length < MIN_NET_FRAME || f.frame.length > MAX_NET_FRAME) return `a frame of ${f.frame.length} octets, allowed ${MIN_NET_FRAME} to ${MAX_NET_FRAME}`;
  return undefined;
}

export function encodeNetFrameHead(f: NetFrame): Uint8Array {
  return netFrameHeadLayout.encode({
    direction: f.direction === "mirrored-input" ? NET_DIRECTION.MIRRORED_INPUT : NET_DIRECTION.SECONDARY_OUTPUT,
    frameLength: f.frame.length,
  });
}

export function decodeNetFrame(body: Uint8Array, where: StreamLocation): NetFrame {
  const { direction, frameLength } = netFrameHeadLayout.decode(body);
  if (direction !== NET_DIRECTION.MIRRORED_INPUT && direction !== NET_DIRECTION.SECONDARY_OUTPUT) throw new StreamError("BAD_FIELD", where, `unknown direction ${direction}`);
  if (frameLength !== body.length - NET_FRAME_SUBHEADER) {
    throw new StreamError("BAD_LENGTH", where, `frame_length ${frameLength} but the body holds ${body.length - NET_FRAME_SUBHEADER} frame octets`);
  }
  if (frameLength < MIN_NET_FRAME) throw new StreamError("BAD_LENGTH", where, `a frame of ${frameLength} octets is shorter than an Ethernet header`);
  return {
    direction: direction === NET_DIRECTION.MIRRORED_INPUT ? "mirrored-input" : "secondary-output",
    frame: Uint8Array.from(body.subarray(NET_FRAME_SUBHEADER)),
  };
}

// ---- DISK_WRITE ----

export function diskWriteProblem(w: DiskWrite): string | undefined {
  return (
    diskIndexProblem(w.disk) ??
    (!Number.isSafeInteger(w.seq) || w.seq < 0 ? `seq ${w.seq} is not an integer in 0..2^53-1` : undefined) ??
    (!Number.isSafeInteger(w.offset) || w.offset < 0 ? `offset ${w.offset} is not an integer in 0..2^53-1` : undefined) ??
    (w.data.length < 1 || w.data.length > MAX_DISK_WRITE_DATA ? `${w.data.length} data octets, allowed 1 to ${MAX_DISK_WRITE_DATA}` : undefined)
  );
}

export function encodeDiskWriteHead(w: DiskWrite): Uint8Array {
  return diskWriteHeadLayout.encode({ disk: w.disk, seq: BigInt(w.seq), offset: BigInt(w.offset) });
}

export function decodeDiskWrite(body: Uint8Array, where: StreamLocation): DiskWrite {
  const h = diskWriteHeadLayout.decode(body);
  const nonZero = diskWriteHeadLayout.reservedViolation(body);
  if (nonZero) throw new StreamError("BAD_RESERVED", where, `reserved field ${nonZero} is not zero`);
  const w: DiskWrite = {
    disk: h.disk,
    seq: u53(h.seq, "seq", where),
    offset: u53(h.offset, "offset", where),
    data: Uint8Array.from(body.subarray(DISK_WRITE_SUBHEADER)),
  };
  const problem = diskWriteProblem(w);
  if (problem) throw new StreamError("BAD_FIELD", where, problem);
  return w;
}

// ---- DISK_CHECKPOINT ----

export function encodeDiskCheckpoint(c: DiskCheckpoint): Uint8Array {
  return diskCheckpointLayout.encode({ disk: c.disk, uptoSeq: BigInt(c.uptoSeq) });
}

export function diskCheckpointProblem(c: DiskCheckpoint): string | undefined {
  return diskIndexProblem(c.disk) ?? (!Number.isSafeInteger(c.uptoSeq) || c.uptoSeq < 0 ? `upto_seq ${c.uptoSeq} is not an integer in 0..2^53-1` : undefined);
}

export function decodeDiskCheckpoint(body: Uint8Array, where: StreamLocation): DiskCheckpoint {
  const h = diskCheckpointLayout.decode(body);
  const nonZero = diskCheckpointLayout.reservedViolation(body);
  if (nonZero) throw new StreamError("BAD_RESERVED", where, `reserved field ${nonZero} is not zero`);
  const c = { disk: h.disk, uptoSeq: u53(h.uptoSeq, "upto_seq", where) };
  const problem = diskCheckpointProblem(c);
  if (problem) throw new StreamError("BAD_FIELD", where, problem);
  return c;
}

// ---- DISK_INFO ----

export function diskInfoProblem(i: DiskInfo): string | undefined {
  const pow2 = i.chunkSize >= 4096 && i.chunkSize <= 64 * 2 ** 20 && (i.chunkSize & (i.chunkSize - 1)) === 0;
  if (!pow2) return `chunk_size ${i.chunkSize} is not a power of two from 4096 to 64 MiB`;
  if (!Number.isSafeInteger(i.size) || i.size < 1) return `size ${i.size} is not a positive integer below 2^53`;
  const chunks = Math.ceil(i.size / i.chunkSize);
  if (chunks > MAX_DISK_CHUNKS) return `${chunks} chunks, at most ${MAX_DISK_CHUNKS}`;
  if (i.chunkHashes.length !== chunks) return `${i.chunkHashes.length} chunk hashes for ${chunks} chunks`;
  if (i.chunkHashes.some((h) => h.length !== SHA256_OCTETS)) return `a chunk hash is not ${SHA256_OCTETS} octets`;
  return diskIndexProblem(i.disk);
}

export function encodeDiskInfo(i: DiskInfo): Uint8Array {
  const out = new Uint8Array(DISK_INFO_SUBHEADER + i.chunkHashes.length * SHA256_OCTETS);
  diskInfoHeadLayout.encodeInto(out, 0, { disk: i.disk, chunkSize: i.chunkSize, size: BigInt(i.size) });
  i.chunkHashes.forEach((h, n) => out.set(h, DISK_INFO_SUBHEADER + n * SHA256_OCTETS));
  return out;
}

export function decodeDiskInfo(body: Uint8Array, where: StreamLocation): DiskInfo {
  const h = diskInfoHeadLayout.decode(body);
  const hashOctets = body.length - DISK_INFO_SUBHEADER;
  if (hashOctets % SHA256_OCTETS !== 0) throw new StreamError("BAD_LENGTH", where, `${hashOctets} hash octets is not a multiple of ${SHA256_OCTETS}`);
  const chunkHashes: Uint8Array[] = [];
  for (let at = DISK_INFO_SUBHEADER; at < body.length; at += SHA256_OCTETS) chunkHashes.push(Uint8Array.from(body.subarray(at, at + SHA256_OCTETS)));
  const info = { disk: h.disk, chunkSize: h.chunkSize, size: u53(h.size, "size", where), chunkHashes };
  const problem = diskInfoProblem(info);
  if (problem) throw new StreamError("BAD_FIELD", where, problem);
  return info;
}

// ---- DISK_WANT ----

export function diskWantProblem(w: DiskWant): string | undefined {
  if (w.chunks.length > MAX_DISK_CHUNKS) return `${w.chunks.length} chunk indexes, at most ${MAX_DISK_CHUNKS}`;
  let last = -1;
  for (const c of w.chunks) {
    if (!Number.isInteger(c) || c < 0 || c >= MAX_DISK_CHUNKS) return `chunk index ${c} outside 0..${MAX_DISK_CHUNKS - 1}`;
    if (c <= last) return `chunk index ${c} after ${last}: the list must be strictly ascending`;
    last = c;
  }
  return diskIndexProblem(w.disk);
}

export function encodeDiskWant(w: DiskWant): Uint8Array {
  const out = new Uint8Array(DISK_WANT_SUBHEADER + 4 * w.chunks.length);
  diskWantHeadLayout.encodeInto(out, 0, { disk: w.disk, count: w.chunks.length });
  const view = new DataView(out.buffer);
  w.chunks.forEach((c, n) => view.setUint32(DISK_WANT_SUBHEADER + 4 * n, c, true));
  return out;
}

export function decodeDiskWant(body: Uint8Array, where: StreamLocation): DiskWant {
  const h = diskWantHeadLayout.decode(body);
  if (body.length !== DISK_WANT_SUBHEADER + 4 * h.count) throw new StreamError("BAD_LENGTH", where, `count ${h.count} needs ${DISK_WANT_SUBHEADER + 4 * h.count} octets, the body has ${body.length}`);
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const chunks: number[] = [];
  for (let n = 0; n < h.count; n++) chunks.push(view.getUint32(DISK_WANT_SUBHEADER + 4 * n, true));
  const w = { disk: h.disk, chunks };
  const problem = diskWantProblem(w);
  if (problem) throw new StreamError("BAD_FIELD", where, problem);
  return w;
}

// ---- CHECKPOINT_REQUEST ----

export function checkpointRequestProblem(r: CheckpointRequest): string | undefined {
  if (r.reason !== "disk-backlog") return `unknown reason ${String(r.reason)}`;
  return diskIndexProblem(r.disk);
}

export function encodeCheckpointRequest(r: CheckpointRequest): Uint8Array {
  return checkpointRequestLayout.encode({ reason: CHECKPOINT_REQUEST_REASON.DISK_BACKLOG, disk: r.disk });
}

export function decodeCheckpointRequest(body: Uint8Array, where: StreamLocation): CheckpointRequest {
  const h = checkpointRequestLayout.decode(body);
  if (h.reason !== CHECKPOINT_REQUEST_REASON.DISK_BACKLOG) throw new StreamError("BAD_FIELD", where, `unknown reason ${h.reason}`);
  const r: CheckpointRequest = { reason: "disk-backlog", disk: h.disk };
  const problem = checkpointRequestProblem(r);
  if (problem) throw new StreamError("BAD_FIELD", where, problem);
  return r;
}
