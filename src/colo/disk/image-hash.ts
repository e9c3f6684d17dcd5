/**
 * Disk image hashes for the initial sync (COLO-PROTOCOL.md §7: "the
 * secondary image starts identical to the primary's, checked by hash, or
 * made so by an initial sync"). One pass yields the SHA-256 of the whole
 * image and of each fixed-size chunk (default 1 MiB); the two sides exchange
 * chunk lists and copy only the chunks that differ.
 */
import { createHash } from "node:crypto";
import { open, type FileHandle } from "node:fs/promises";
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import type { BlockBackend } from "../../engine/engine.js";
import { DiskReplicationError } from "./errors.js";

/** Chunk size of per-chunk hashes: 1 MiB (a 10 GiB image gives 10 240 hashes, 650 KiB of hex). */
export const DEFAULT_HASH_CHUNK_BYTES = 2 ** 20;

export interface ImageHashes {
  byteLength: number;
  chunkBytes: number;
  /** SHA-256 of the whole image, lower-case hex. */
  sha256: string;
  /** SHA-256 of each chunk in order (the last may be short), lower-case hex. */
  chunks: string[];
}

export interface HashOptions {
  /** Default DEFAULT_HASH_CHUNK_BYTES. */
  chunkBytes?: number;
}

/** What hashing needs of a device. */
export type ReadableDevice = Pick<BlockBackend, "byteLength" | "read">;

/** Hashes a device, yielding to the event loop after each chunk (a large image takes seconds). */
export async function hashBackend(device: ReadableDevice, opts: HashOptions = {}): Promise<ImageHashes> {
  const hasher = new ImageHasher(device.byteLength, opts.chunkBytes);
  for (const { offset, length } of chunkRanges(device.byteLength, hasher.chunkBytes)) {
    hasher.add(readExactly(device, offset, length));
    await yieldToEventLoop();
  }
  return hasher.finish();
}

/** Hashes a device in one synchronous pass (small devices, tests). */
export function hashBackendSync(device: ReadableDevice, opts: HashOptions = {}): ImageHashes {
  const hasher = new ImageHasher(device.byteLength, opts.chunkBytes);
  for (const { offset, length } of chunkRanges(device.byteLength, hasher.chunkBytes)) {
    hasher.add(readExactly(device, offset, length));
  }
  return hasher.finish();
}

/** Hashes an image file by its size at open; throws if it shrinks while being read. */
export async function hashFile(path: string, opts: HashOptions = {}): Promise<ImageHashes> {
  let handle: FileHandle;
  try {
    handle = await open(path, "r");
  } catch (err) {
    throw new DiskReplicationError(`image ${path}`, "UNDERLYING", `cannot open: ${describe(err)}`);
  }
  try {
    const { size } = await handle.stat();
    const hasher = new ImageHasher(size, opts.chunkBytes);
    const buffer = new Uint8Array(hasher.chunkBytes);
    for (const { offset, length } of chunkRanges(size, hasher.chunkBytes)) {
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(buffer, done, length - done, offset + done);
        if (bytesRead === 0) {
          throw new DiskReplicationError(`image ${path}`, "UNDERLYING", `ended at ${offset + done}, expected ${size} bytes`);
        }
        done += bytesRead;
      }
      hasher.add(buffer.subarray(0, length));
    }
    return hasher.finish();
  } finally {
    await handle.close();
  }
}

/**
 * Indices of the chunks that differ between two per-chunk hash lists (same
 * chunk size assumed). A chunk present in only one list differs.
 */
export function differingChunks(a: readonly string[], b: readonly string[]): number[] {
  const out: number[] = [];
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) out.push(i);
  return out;
}

/** The chunks to copy to make `secondary` equal to `primary`; throws if the images cannot be compared. */
export function chunksToCopy(primary: ImageHashes, secondary: ImageHashes): number[] {
  if (primary.byteLength !== secondary.byteLength) {
    throw new DiskReplicationError("image comparison", "RANGE", `sizes differ: primary ${primary.byteLength}, secondary ${secondary.byteLength} bytes`);
  }
  if (primary.chunkBytes !== secondary.chunkBytes) {
    throw new DiskReplicationError("image comparison", "RANGE", `chunk sizes differ: primary ${primary.chunkBytes}, secondary ${secondary.chunkBytes}`);
  }
  if (primary.sha256 === secondary.sha256) return [];
  return differingChunks(primary.chunks, secondary.chunks);
}

/** The byte range of chunk `index` in an image of `byteLength` bytes. */
export function chunkRange(index: number, chunkBytes: number, byteLength: number): { offset: number; length: number } {
  const offset = index * chunkBytes;
  if (!Number.isSafeInteger(index) || index < 0 || offset >= byteLength) {
    throw new DiskReplicationError("image chunks", "RANGE", `chunk ${index} of ${chunkBytes} bytes is outside a ${byteLength}-byte image`);
  }
  return { offset, length: Math.min(chunkBytes, byteLength - offset) };
}

function* chunkRanges(byteLength: number, chunkBytes: number): Generator<{ offset: number; length: number }> {
  for (let offset = 0; offset < byteLength; offset += chunkBytes) {
    yield { offset, length: Math.min(chunkBytes, byteLength - offset) };
  }
}

function readExactly(device: ReadableDevice, offset: number, length: number): Uint8Array {
  const bytes = device.read(offset, length);
  if (bytes.length !== length) {
    throw new DiskReplicationError("image hash", "UNDERLYING", `read [${offset}, +${length}) returned ${bytes.length} bytes`);
  }
  return bytes;
}

class ImageHasher {
  readonly chunkBytes: number;
  private readonly whole = createHash("sha256");
  private readonly chunks: string[] = [];

  constructor(
    private readonly byteLength: number,
    chunkBytes = DEFAULT_HASH_CHUNK_BYTES,
  ) {
    if (!Number.isSafeInteger(chunkBytes) || chunkBytes <= 0) {
      throw new DiskReplicationError("image hash", "RANGE", `chunk size ${chunkBytes} is not a positive integer`);
    }
    this.chunkBytes = chunkBytes;
  }

  add(chunk: Uint8Array): void {
    this.whole.update(chunk);
    this.chunks.push(createHash("sha256").update(chunk).digest("hex"));
  }

  finish(): ImageHashes {
    return { byteLength: this.byteLength, chunkBytes: this.chunkBytes, sha256: this.whole.digest("hex"), chunks: this.chunks };
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) return (err as NodeJS.ErrnoException).code ?? err.message;
  return String(err);
}
