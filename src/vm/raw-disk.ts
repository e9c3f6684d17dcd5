import { closeSync, fdatasync, fdatasyncSync, fstatSync, openSync, readSync, writeSync } from "node:fs";
import type { BlockBackend } from "../engine/engine.js";

/** Sector size of the IDE disks v86 emulates (ATA: 512-byte logical sectors). */
export const SECTOR_SIZE = 512;

export interface RawDiskStats {
  reads: number;
  writes: number;
  /** flush() calls (each an fdatasync). */
  flushes: number;
  bytesRead: number;
  bytesWritten: number;
  /** Writes to a read-only disk, dropped. */
  rejectedWrites: number;
}

/**
 * A raw image file as a block device. Every guest read and write goes
 * through here, synchronously (the emu engine requires it; see BlockBackend),
 * so a write is in the host's page cache when the guest sees it complete:
 * it survives the death of this process, not of the host.
 */
export class RawDiskBackend implements BlockBackend {
  readonly byteLength: number;
  readonly stats: RawDiskStats = { reads: 0, writes: 0, flushes: 0, bytesRead: 0, bytesWritten: 0, rejectedWrites: 0 };
  private fd: number | undefined;
  /** Called after each write lands, with its offset and bytes (replication hooks in here). */
  onWrite: ((offset: number, data: Uint8Array) => void) | undefined;
  /**
   * Called before each write touches the image, with its range: a write-ahead
   * hook (the daemon's activity log marks the range durably here). A hook that
   * throws fails the write before any octet of it lands.
   */
  beforeWrite: ((offset: number, length: number) => void) | undefined;

  private constructor(
    readonly path: string,
    readonly readOnly: boolean,
    fd: number,
    size: number,
  ) {
    this.fd = fd;
    this.byteLength = size;
  }

  /** Opens the image; throws an Error naming the path on any problem. */
  static open(path: string, readOnly: boolean): RawDiskBackend {
    let fd: number;
    try {
      fd = openSync(path, readOnly ? "r" : "r+");
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new Error(`cannot open disk image ${path}${readOnly ? " read-only" : " read-write"}: ${e.code ?? e.message}`);
    }
    const size = fstatSync(fd).size;
    if (size === 0 || size % SECTOR_SIZE !== 0) {
      closeSync(fd);
      throw new Error(`disk image ${path} is ${size} bytes: not a positive multiple of ${SECTOR_SIZE}`);
    }
    return new RawDiskBackend(path, readOnly, fd, size);
  }

  private requireFd(): number {
    if (this.fd === undefined) throw new Error(`disk image ${this.path} is closed`);
    return this.fd;
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || offset + length > this.byteLength) {
      throw new RangeError(`disk ${this.path}: access [${offset}, +${length}) outside the ${this.byteLength}-byte image`);
    }
  }

  read(offset: number, length: number): Uint8Array {
    this.checkRange(offset, length);
    const fd = this.requireFd();
    const out = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const n = readSync(fd, out, done, length - done, offset + done);
      if (n === 0) break; // past EOF reads as zeros (sparse tail)
      done += n;
    }
    this.stats.reads++;
    this.stats.bytesRead += length;
    return new Uint8Array(out.buffer, out.byteOffset, out.length);
  }

  write(offset: number, data: Uint8Array): void {
    this.checkRange(offset, data.length);
    if (this.readOnly) {
      this.stats.rejectedWrites++;
      return;
    }
    const fd = this.requireFd();
    this.beforeWrite?.(offset, data.length);
    let done = 0;
    while (done < data.length) {
      done += writeSync(fd, data, done, data.length - done, offset + done);
    }
    this.stats.writes++;
    this.stats.bytesWritten += data.length;
    this.onWrite?.(offset, data);
  }

  /** The guest's flush (qemu: NBD FLUSH, FUA writes): what was written is on the host's storage (fdatasync). */
  flush(): void {
    if (this.readOnly) return;
    fdatasyncSync(this.requireFd());
    this.stats.flushes++;
  }

  /** fdatasync off the event loop (libuv's thread pool): what was written before the call is on storage when it resolves. */
  flushAsync(): Promise<void> {
    if (this.readOnly) return Promise.resolve();
    const fd = this.requireFd();
    return new Promise((resolve, reject) => fdatasync(fd, (err) => (err ? reject(new Error(`disk image ${this.path}: fdatasync: ${err.code ?? err.message}`)) : resolve())));
  }

  close(): void {
    if (this.fd === undefined) return;
    closeSync(this.fd);
    this.fd = undefined;
  }
}
