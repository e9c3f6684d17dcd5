/**
 * A writer (and a strict reader, for tests and self-checks) of "newc" cpio
 * archives, the format the Linux kernel unpacks as an initramfs.
 *
 * Format: linux/Documentation/driver-api/early-userspace/buffer-format.rst.
 * Each entry is a 110-byte ASCII header ("070701" then 13 fields of 8 hex
 * digits), the NUL-terminated name padded so header+name is a multiple of 4,
 * then the data padded to a multiple of 4. The archive ends with an entry
 * named "TRAILER!!!".
 *
 * Output is deterministic: mtime, uid and gid are 0, inode numbers count up
 * from 1 in archive order, entries are sorted by path with parents first.
 */

import { GuestBuildError } from "./errors.js";

/** File type bits of `mode`: linux/include/uapi/linux/stat.h. */
export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;

export const NEWC_MAGIC = "070701";
export const TRAILER_NAME = "TRAILER!!!";

/** Header fields after the magic, in order, each 8 ASCII hex digits (buffer-format.rst). */
const HEADER_FIELDS = [
  "ino",
  "mode",
  "uid",
  "gid",
  "nlink",
  "mtime",
  "filesize",
  "devmajor",
  "devminor",
  "rdevmajor",
  "rdevminor",
  "namesize",
  "check",
] as const;
type HeaderField = (typeof HEADER_FIELDS)[number];
type Header = Record<HeaderField, number>;

const MAGIC_SIZE = 6;
const FIELD_SIZE = 8;
export const HEADER_SIZE = MAGIC_SIZE + HEADER_FIELDS.length * FIELD_SIZE; // 110
const ALIGN = 4;
const MAX_FIELD = 0xffffffff;

export type CpioEntry =
  | { type: "file"; path: string; mode: number; data: Uint8Array }
  | { type: "directory"; path: string; mode: number }
  | { type: "symlink"; path: string; target: string }
  | { type: "chardev"; path: string; mode: number; major: number; minor: number };

/** An entry as read back, with the header fields the writer chose. */
export type DecodedCpioEntry = CpioEntry & { ino: number; nlink: number; mtime: number; uid: number; gid: number };

function padLength(n: number): number {
  return (ALIGN - (n % ALIGN)) % ALIGN;
}

/** Normalizes an archive path: no leading "/", no empty, "." or ".." components. */
export function normalizeCpioPath(path: string): string {
  const parts = path.split("/").filter((p) => p !== "");
  if (parts.length === 0) {
    throw new GuestBuildError("CPIO_INVALID", `cpio: empty path "${path}"`);
  }
  for (const p of parts) {
    if (p === "." || p === ".." || p.includes("\0")) {
      throw new GuestBuildError("CPIO_INVALID", `cpio: invalid path "${path}"`);
    }
  }
  return parts.join("/");
}

function comparePaths(a: string, b: string): number {
  const pa = a.split("/");
  const pb = b.split("/");
  const n = Math.min(pa.length, pb.length);
  for (let i = 0; i < n; i++) {
    const x = pa[i] as string;
    const y = pb[i] as string;
    if (x !== y) return x < y ? -1 : 1;
  }
  return pa.length - pb.length;
}

function encodeHeader(h: Header): Buffer {
  let text = NEWC_MAGIC;
  for (const field of HEADER_FIELDS) {
    const v = h[field];
    if (!Number.isInteger(v) || v < 0 || v > MAX_FIELD) {
      throw new GuestBuildError("CPIO_INVALID", `cpio: header field ${field}=${v} does not fit 8 hex digits`);
    }
    text += v.toString(16).padStart(FIELD_SIZE, "0");
  }
  return Buffer.from(text, "latin1");
}

function pushEntry(out: Buffer[], header: Omit<Header, "namesize" | "filesize" | "check">, name: string, data: Uint8Array): number {
  const nameBytes = Buffer.from(name + "\0", "utf8");
  const h: Header = { ...header, namesize: nameBytes.length, filesize: data.length, check: 0 };
  out.push(encodeHeader(h), nameBytes, Buffer.alloc(padLength(HEADER_SIZE + nameBytes.length)));
  if (data.length > 0) {
    out.push(Buffer.from(data.buffer, data.byteOffset, data.length), Buffer.alloc(padLength(data.length)));
  }
  return HEADER_SIZE + nameBytes.length + padLength(HEADER_SIZE + nameBytes.length) + data.length + padLength(data.length);
}

/**
 * Encodes entries, in the given order, as a newc archive with its trailer.
 * Callers that want parents-first ordering use `CpioTree`.
 */
export function encodeCpio(entries: readonly CpioEntry[]): Buffer {
  const out: Buffer[] = [];
  const seen = new Set<string>();
  let ino = 1;
  for (const e of entries) {
    const path = normalizeCpioPath(e.path);
    if (seen.has(path)) throw new GuestBuildError("CPIO_INVALID", `cpio: duplicate path "${path}"`);
    seen.add(path);
    const base = { ino: ino++, uid: 0, gid: 0, mtime: 0, devmajor: 0, devminor: 0, rdevmajor: 0, rdevminor: 0 };
    switch (e.type) {
      case "file":
        pushEntry(out, { ...base, mode: S_IFREG | (e.mode & 0o7777), nlink: 1 }, path, e.data);
        break;
      case "directory":
        pushEntry(out, { ...base, mode: S_IFDIR | (e.mode & 0o7777), nlink: 2 }, path, new Uint8Array(0));
        break;
      case "symlink":
        if (e.target === "") throw new GuestBuildError("CPIO_INVALID", `cpio: symlink "${path}" has an empty target`);
        pushEntry(out, { ...base, mode: S_IFLNK | 0o777, nlink: 1 }, path, Buffer.from(e.target, "utf8"));
        break;
      case "chardev":
        pushEntry(
          out,
          { ...base, mode: S_IFCHR | (e.mode & 0o7777), nlink: 1, rdevmajor: e.major, rdevminor: e.minor },
          path,
          new Uint8Array(0),
        );
        break;
    }
  }
  pushEntry(
    out,
    { ino: 0, mode: 0, uid: 0, gid: 0, nlink: 1, mtime: 0, devmajor: 0, devminor: 0, rdevmajor: 0, rdevminor: 0 },
    TRAILER_NAME,
    new Uint8Array(0),
  );
  return Buffer.concat(out);
}

function invalid(offset: number, what: string): GuestBuildError {
  return new GuestBuildError("CPIO_INVALID", `cpio: ${what} at offset ${offset}`);
}

function checkZeroPadding(bytes: Uint8Array, from: number, length: number): void {
  for (let i = from; i < from + length; i++) {
    if (bytes[i] !== 0) throw invalid(i, "non-zero padding byte");
  }
}

/**
 * Parses a newc archive strictly (magic, hex fields, bounds, zero padding,
 * trailer) and returns its entries. Regular files, directories, symlinks and
 * character devices only.
 */
export function decodeCpio(bytes: Uint8Array): DecodedCpioEntry[] {
  const entries: DecodedCpioEntry[] = [];
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  let off = 0;
  for (;;) {
    if (off + HEADER_SIZE > bytes.length) throw invalid(off, "truncated header (no trailer)");
    if (text.toString("latin1", off, off + MAGIC_SIZE) !== NEWC_MAGIC) throw invalid(off, "bad magic");
    const h = {} as Header;
    HEADER_FIELDS.forEach((field, i) => {
      const start = off + MAGIC_SIZE + i * FIELD_SIZE;
      const digits = text.toString("latin1", start, start + FIELD_SIZE);
      if (!/^[0-9a-fA-F]{8}$/.test(digits)) throw invalid(start, `bad hex in field ${field}`);
      h[field] = parseInt(digits, 16);
    });
    const nameStart = off + HEADER_SIZE;
    if (h.namesize < 1) throw invalid(off, "namesize 0");
    if (nameStart + h.namesize > bytes.length) throw invalid(off, "name runs past the end");
    if (bytes[nameStart + h.namesize - 1] !== 0) throw invalid(nameStart, "name not NUL-terminated");
    const name = text.toString("utf8", nameStart, nameStart + h.namesize - 1);
    const namePad = padLength(HEADER_SIZE + h.namesize);
    checkZeroPadding(bytes, nameStart + h.namesize, namePad);
    const dataStart = nameStart + h.namesize + namePad;
    if (dataStart + h.filesize > bytes.length) throw invalid(dataStart, `data of "${name}" runs past the end`);
    const data = bytes.subarray(dataStart, dataStart + h.filesize);
    const dataPad = padLength(h.filesize);
    if (dataStart + h.filesize + dataPad > bytes.length) throw invalid(dataStart, `padding of "${name}" runs past the end`);
    checkZeroPadding(bytes, dataStart + h.filesize, dataPad);
    off = dataStart + h.filesize + dataPad;
    if (name === TRAILER_NAME) break;

    const common = { path: name, ino: h.ino, nlink: h.nlink, mtime: h.mtime, uid: h.uid, gid: h.gid };
    const perm = h.mode & 0o7777;
    switch (h.mode & S_IFMT) {
      case S_IFREG:
        entries.push({ ...common, type: "file", mode: perm, data });
        break;
      case S_IFDIR:
        entries.push({ ...common, type: "directory", mode: perm });
        break;
      case S_IFLNK:
        entries.push({ ...common, type: "symlink", target: Buffer.from(data).toString("utf8") });
        break;
      case S_IFCHR:
        entries.push({ ...common, type: "chardev", mode: perm, major: h.rdevmajor, minor: h.rdevminor });
        break;
      default:
        throw invalid(off, `unsupported file type in mode ${h.mode.toString(8)} of "${name}"`);
    }
  }
  return entries;
}

/**
 * A file tree to be written as a cpio archive: missing parent directories
 * are added (mode 0755), paths are unique, and `encode()` writes parents
 * before children in a deterministic order.
 */
export class CpioTree {
  private readonly byPath = new Map<string, CpioEntry>();

  private ensureParents(path: string): void {
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      const existing = this.byPath.get(dir);
      if (existing === undefined) {
        this.byPath.set(dir, { type: "directory", path: dir, mode: 0o755 });
      } else if (existing.type !== "directory") {
        throw new GuestBuildError("CPIO_INVALID", `cpio: "${dir}" is a ${existing.type}, cannot hold "${path}"`);
      }
    }
  }

  private put(entry: CpioEntry): void {
    const path = normalizeCpioPath(entry.path);
    const existing = this.byPath.get(path);
    if (existing !== undefined) {
      // Declaring an existing directory again (e.g. with another mode) is allowed.
      if (existing.type === "directory" && entry.type === "directory") {
        this.byPath.set(path, { ...entry, path });
        return;
      }
      throw new GuestBuildError("CPIO_INVALID", `cpio: "${path}" added twice`);
    }
    this.ensureParents(path);
    this.byPath.set(path, { ...entry, path });
  }

  addDirectory(path: string, mode = 0o755): void {
    this.put({ type: "directory", path, mode });
  }

  addFile(path: string, data: Uint8Array, mode = 0o644): void {
    this.put({ type: "file", path, mode, data });
  }

  addSymlink(path: string, target: string): void {
    this.put({ type: "symlink", path, target });
  }

  addCharDevice(path: string, major: number, minor: number, mode = 0o600): void {
    this.put({ type: "chardev", path, mode, major, minor });
  }

  has(path: string): boolean {
    return this.byPath.has(normalizeCpioPath(path));
  }

  /** Sum of file and symlink-target sizes: what the tree occupies unpacked. */
  contentBytes(): number {
    let n = 0;
    for (const e of this.byPath.values()) {
      if (e.type === "file") n += e.data.length;
      else if (e.type === "symlink") n += Buffer.byteLength(e.target);
    }
    return n;
  }

  entries(): CpioEntry[] {
    return [...this.byPath.values()].sort((a, b) => comparePaths(a.path, b.path));
  }

  encode(): Buffer {
    return encodeCpio(this.entries());
  }
}
