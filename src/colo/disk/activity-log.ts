/**
 * The activity log of a writable raw image (docs/specs/activity-log.md):
 * a small file beside it, `<image>.colo-al`, that names one replication
 * session (`lineage`), what this image is in it (`kind`), a checkpoint
 * number (`seq`) and a bitmap of 1 MiB chunks that may differ from the
 * state both images of the session held at that checkpoint. Re-protection
 * copies only those chunks when the two images' logs prove it
 * (log-plan.ts) instead of hashing both images.
 *
 * Write-ahead (DRBD's activity log): `mark()` sets a chunk's bit and makes
 * it durable (pwrite of its octet + fdatasync) before the write to that
 * chunk touches the image; a chunk already marked costs nothing. A set of
 * bits is only ever replaced as a whole, atomically (`replace()`: a
 * temporary file, fdatasync, rename, fsync of the directory), so a crash
 * at any point leaves either the old log or the new one, never a mix, and
 * never a chunk written but unmarked.
 *
 * Not thread-safe; all I/O is synchronous (it runs inside a guest write).
 */
import { createHash } from "node:crypto";
import { closeSync, fdatasyncSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import { DiskReplicationError } from "./errors.js";

/** What an image is in its session (spec activity-log.md §2). */
export type LogKind = "primary" | "replica" | "survivor";

export const LOG_KIND_CODE: Readonly<Record<LogKind, number>> = { primary: 1, replica: 2, survivor: 3 };
const KIND_OF_CODE: ReadonlyMap<number, LogKind> = new Map([
  [1, "primary"],
  [2, "replica"],
  [3, "survivor"],
]);

export const LOG_MAGIC = "ColoAcLg";
export const LOG_VERSION = 1;
/** Header octets; the bitmap follows. */
export const LOG_HEADER_BYTES = 64;
/** Octets of the header covered by its checksum (the rest is the checksum). */
const CHECKED_BYTES = 56;
export const LINEAGE_BYTES = 16;
/** Chunks of one image at most (1 TiB at 1 MiB), as in DISK_INFO. */
export const MAX_LOG_CHUNKS = 2 ** 20;
export const LOG_SUFFIX = ".colo-al";

export interface LogHeader {
  /** 16 random octets naming one replication session. */
  readonly lineage: Uint8Array;
  readonly kind: LogKind;
  /** The checkpoint the bits are relative to (replica: 0). */
  readonly seq: number;
  /** Octets of the image. */
  readonly size: number;
  /** Octets per chunk (1 MiB in colo). */
  readonly chunkSize: number;
}

/** A log as read: its header and the chunks marked, ascending. */
export interface LogContents {
  readonly header: LogHeader;
  readonly chunks: readonly number[];
}

/** The log file of an image. */
export function logPathOf(imagePath: string): string {
  return imagePath + LOG_SUFFIX;
}

/** Chunks of an image of `size` octets. */
export function chunkCountOf(size: number, chunkSize: number): number {
  return Math.ceil(size / chunkSize);
}

/** Why `h` cannot be written (undefined: it can). */
export function logHeaderProblem(h: LogHeader): string | undefined {
  if (h.lineage.length !== LINEAGE_BYTES) return `lineage of ${h.lineage.length} octets, not ${LINEAGE_BYTES}`;
  if (!Number.isSafeInteger(h.seq) || h.seq < 0) return `seq ${h.seq} is not an integer in 0..2^53-1`;
  if (!Number.isSafeInteger(h.size) || h.size < 1) return `size ${h.size} is not a positive integer below 2^53`;
  const pow2 = Number.isInteger(h.chunkSize) && h.chunkSize >= 4096 && h.chunkSize <= 64 * 2 ** 20 && (h.chunkSize & (h.chunkSize - 1)) === 0;
  if (!pow2) return `chunk size ${h.chunkSize} is not a power of two from 4096 to 64 MiB`;
  const count = chunkCountOf(h.size, h.chunkSize);
  if (count > MAX_LOG_CHUNKS) return `${count} chunks, at most ${MAX_LOG_CHUNKS}`;
  return undefined;
}

function checksum(header: Uint8Array): Uint8Array {
  return createHash("sha256").update(header.subarray(0, CHECKED_BYTES)).digest().subarray(0, LOG_HEADER_BYTES - CHECKED_BYTES);
}

/** The whole file for `header` with `chunks` marked. */
export function encodeLog(header: LogHeader, chunks: Iterable<number>): Uint8Array {
  const problem = logHeaderProblem(header);
  if (problem) throw new DiskReplicationError("activity log", "RANGE", problem);
  const count = chunkCountOf(header.size, header.chunkSize);
  const out = new Uint8Array(LOG_HEADER_BYTES + Math.ceil(count / 8));
  const view = new DataView(out.buffer);
  out.set(Buffer.from(LOG_MAGIC, "ascii"), 0);
  view.setUint32(8, LOG_VERSION, true);
  view.setUint32(12, LOG_KIND_CODE[header.kind], true);
  out.set(header.lineage, 16);
  view.setBigUint64(32, BigInt(header.seq), true);
  view.setBigUint64(40, BigInt(header.size), true);
  view.setUint32(48, header.chunkSize, true);
  view.setUint32(52, count, true);
  out.set(checksum(out), CHECKED_BYTES);
  for (const c of chunks) {
    if (!Number.isInteger(c) || c < 0 || c >= count) throw new DiskReplicationError("activity log", "RANGE", `chunk ${c} outside 0..${count - 1}`);
    const at = LOG_HEADER_BYTES + (c >>> 3);
    out[at] = (out[at] ?? 0) | (1 << (c & 7));
  }
  return out;
}

/** Parse a whole log file; throws DiskReplicationError LOG naming `path` and what is wrong. */
export function decodeLog(bytes: Uint8Array, path: string): LogContents {
  const bad = (what: string): never => {
    throw new DiskReplicationError(`activity log ${path}`, "LOG", what);
  };
  if (bytes.length < LOG_HEADER_BYTES) bad(`${bytes.length} octets: truncated inside the ${LOG_HEADER_BYTES}-octet header`);
  if (Buffer.from(bytes.subarray(0, 8)).toString("latin1") !== LOG_MAGIC) bad(`not an activity log (magic is not "${LOG_MAGIC}")`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(8, true);
  if (version !== LOG_VERSION) bad(`version ${version}, this colo reads version ${LOG_VERSION}`);
  if (!Buffer.from(checksum(bytes)).equals(Buffer.from(bytes.subarray(CHECKED_BYTES, LOG_HEADER_BYTES)))) bad("header checksum mismatch (corrupt header)");
  const kindCode = view.getUint32(12, true);
  const kind = KIND_OF_CODE.get(kindCode);
  if (kind === undefined) bad(`unknown kind ${kindCode}`);
  const seq = view.getBigUint64(32, true);
  const size = view.getBigUint64(40, true);
  if (seq > BigInt(Number.MAX_SAFE_INTEGER) || size > BigInt(Number.MAX_SAFE_INTEGER)) bad("seq or size is 2^53 or more");
  const header: LogHeader = { lineage: Uint8Array.from(bytes.subarray(16, 32)), kind: kind as LogKind, seq: Number(seq), size: Number(size), chunkSize: view.getUint32(48, true) };
  const problem = logHeaderProblem(header);
  if (problem) bad(problem);
  const count = chunkCountOf(header.size, header.chunkSize);
  if (view.getUint32(52, true) !== count) bad(`chunk count ${view.getUint32(52, true)}, but ${count} chunks of ${header.chunkSize} make ${header.size} octets`);
  const expected = LOG_HEADER_BYTES + Math.ceil(count / 8);
  if (bytes.length < expected) bad(`${bytes.length} octets: truncated (the bitmap needs ${expected})`);
  if (bytes.length > expected) bad(`${bytes.length} octets: ${bytes.length - expected} after the bitmap`);
  const chunks: number[] = [];
  for (let i = 0; i < expected - LOG_HEADER_BYTES; i++) {
    const b = bytes[LOG_HEADER_BYTES + i] ?? 0;
    if (b === 0) continue;
    for (let bit = 0; bit < 8; bit++) if ((b & (1 << bit)) !== 0) chunks.push(8 * i + bit);
  }
  if (chunks.length > 0 && (chunks[chunks.length - 1] ?? 0) >= count) bad(`a bit past the last chunk (${count - 1}) is set`);
  if (kind === "replica" && chunks.length > 0) bad(`a replica's log with ${chunks.length} chunks marked (a replica marks none)`);
  return { header, chunks };
}

/** Reads the log beside `imagePath`: undefined when there is none; throws DiskReplicationError LOG when it is unreadable. */
export function readLog(imagePath: string): LogContents | undefined {
  const path = logPathOf(imagePath);
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new DiskReplicationError(`activity log ${path}`, "LOG", `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return decodeLog(bytes, path);
}

function fsyncDir(path: string): void {
  const fd = openSync(dirname(path), "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Deletes the log beside `imagePath`, durably (the directory is synced); nothing when there is none. */
export function removeLog(imagePath: string): boolean {
  const path = logPathOf(imagePath);
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw new DiskReplicationError(`activity log ${path}`, "LOG", `cannot delete: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  fsyncDir(path);
  return true;
}

/** Writes the whole log atomically: a temporary file, fdatasync, rename over the log, fsync of the directory. */
function writeAtomically(path: string, bytes: Uint8Array): void {
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, "w", 0o600);
  try {
    let done = 0;
    while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done, done);
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  fsyncDir(path);
}

export interface ActivityLogOptions {
  /** Called after each fdatasync of the log (tests: the order of syncs and image writes). */
  onSynced?: (what: "mark" | "replace") => void;
  /** A mark failed and the log was deleted (image-log.ts): the write went on without it. */
  onDropped?: (err: Error) => void;
}

/** An image's log, open for marking. */
export class ActivityLog {
  private fd: number | undefined;
  private bits: Uint8Array;
  private count: number;
  private marked: number;
  private current: LogHeader;
  /** Marks that had to sync (a chunk not marked before). */
  syncs = 0;

  private constructor(
    readonly path: string,
    header: LogHeader,
    bytes: Uint8Array,
    private readonly opts: ActivityLogOptions,
  ) {
    this.current = header;
    this.bits = bytes.slice(LOG_HEADER_BYTES);
    this.count = chunkCountOf(header.size, header.chunkSize);
    this.marked = countBits(this.bits);
    this.fd = openSync(path, "r+");
  }

  /** Writes `header` with `chunks` marked beside `imagePath` (atomically, replacing any log there) and opens it for marking. */
  static create(imagePath: string, header: LogHeader, chunks: Iterable<number>, opts: ActivityLogOptions = {}): ActivityLog {
    const path = logPathOf(imagePath);
    const bytes = encodeLog(header, chunks);
    writeAtomically(path, bytes);
    opts.onSynced?.("replace");
    return new ActivityLog(path, header, bytes, opts);
  }

  get header(): LogHeader {
    return this.current;
  }

  /** Chunks marked. */
  get size(): number {
    return this.marked;
  }

  has(chunk: number): boolean {
    return ((this.bits[chunk >>> 3] ?? 0) & (1 << (chunk & 7))) !== 0;
  }

  /** The marked chunks, ascending. */
  chunks(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.bits.length; i++) {
      const b = this.bits[i] ?? 0;
      if (b !== 0) for (let bit = 0; bit < 8; bit++) if ((b & (1 << bit)) !== 0) out.push(8 * i + bit);
    }
    return out;
  }

  /**
   * Before a write of `length` octets at `offset` touches the image: every
   * chunk it touches is marked, durably, first (one fdatasync for all the
   * chunks not marked before; none when all were). True when it synced.
   */
  mark(offset: number, length: number): boolean {
    if (length <= 0) return false;
    const size = this.current.chunkSize;
    const first = Math.floor(offset / size);
    const last = Math.min(Math.floor((offset + length - 1) / size), this.count - 1);
    const fd = this.requireFd();
    let dirty = false;
    for (let c = first; c <= last; c++) {
      if (this.has(c)) continue;
      const i = c >>> 3;
      this.bits[i] = (this.bits[i] ?? 0) | (1 << (c & 7));
      this.marked++;
      writeSync(fd, this.bits, i, 1, LOG_HEADER_BYTES + i);
      dirty = true;
    }
    if (!dirty) return false;
    fdatasyncSync(fd);
    this.syncs++;
    this.opts.onSynced?.("mark");
    return true;
  }

  /**
   * Replaces the whole log (header and bits) atomically; marking goes on in
   * the new one. On a failure, marking goes on in whichever file is in
   * place (the old one, or the new one if the rename happened).
   */
  replace(header: LogHeader, chunks: Iterable<number>): void {
    const bytes = encodeLog(header, chunks);
    try {
      writeAtomically(this.path, bytes);
    } catch (err) {
      this.adopt(decodeLog(readFileSync(this.path), this.path));
      throw err;
    }
    this.opts.onSynced?.("replace");
    this.adopt({ header, chunks: [] }, bytes);
  }

  /** Marking goes on in the file now at `path`, whose contents are `log` (or exactly `bytes`). */
  private adopt(log: LogContents, bytes?: Uint8Array): void {
    this.close();
    this.current = log.header;
    this.count = chunkCountOf(log.header.size, log.header.chunkSize);
    this.bits = bytes ? bytes.slice(LOG_HEADER_BYTES) : encodeLog(log.header, log.chunks).slice(LOG_HEADER_BYTES);
    this.marked = countBits(this.bits);
    this.fd = openSync(this.path, "r+");
  }

  close(): void {
    if (this.fd === undefined) return;
    closeSync(this.fd);
    this.fd = undefined;
  }

  private requireFd(): number {
    if (this.fd === undefined) throw new DiskReplicationError(`activity log ${this.path}`, "STATE", "closed");
    return this.fd;
  }
}

function countBits(bits: Uint8Array): number {
  let n = 0;
  for (const b of bits) {
    let x = b;
    while (x !== 0) {
      x &= x - 1;
      n++;
    }
  }
  return n;
}
