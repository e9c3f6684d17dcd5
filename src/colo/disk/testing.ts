/** Test helpers for disk replication: in-memory block devices (one with a write hook) and a seeded PRNG. */
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BlockBackend } from "../../engine/engine.js";
import { checkRange } from "./errors.js";

/** A BlockBackend over a Uint8Array; reads return copies, writes copy in. */
export class MemoryDisk implements BlockBackend {
  readonly byteLength: number;
  readonly bytes: Uint8Array;
  reads = 0;
  writes = 0;
  /** Set to make the next write throw (an I/O error); cleared when it fires. */
  failNextWrite: Error | undefined;

  constructor(sizeOrBytes: number | Uint8Array) {
    this.bytes = typeof sizeOrBytes === "number" ? new Uint8Array(sizeOrBytes) : Uint8Array.from(sizeOrBytes);
    this.byteLength = this.bytes.length;
  }

  read(offset: number, length: number): Uint8Array {
    checkRange("memory disk", this.byteLength, offset, length);
    this.reads++;
    return this.bytes.slice(offset, offset + length);
  }

  write(offset: number, data: Uint8Array): void {
    checkRange("memory disk", this.byteLength, offset, data.length);
    const fail = this.failNextWrite;
    if (fail !== undefined) {
      this.failNextWrite = undefined;
      throw fail;
    }
    this.writes++;
    this.bytes.set(data, offset);
  }
}

/**
 * A MemoryDisk with the write hooks of a raw image: `beforeWrite` sees each
 * write's range before it lands (RawDiskBackend.beforeWrite: the activity
 * log's write-ahead mark), `onWrite` after (RawDiskBackend.onWrite: the
 * daemon gives that hook to DiskForwarder).
 */
export class HookedDisk extends MemoryDisk {
  onWrite: ((offset: number, data: Uint8Array) => void) | undefined;
  beforeWrite: ((offset: number, length: number) => void) | undefined;

  override write(offset: number, data: Uint8Array): void {
    this.beforeWrite?.(offset, data.length);
    super.write(offset, data);
    this.onWrite?.(offset, data);
  }
}

/** mulberry32: a small seeded PRNG, reproducible across runs (failures print their seed). */
export class Prng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      const word = Math.floor(this.next() * 2 ** 32);
      for (let j = 0; j < 4 && i + j < n; j++) out[i + j] = (word >>> (8 * j)) & 0xff;
    }
    return out;
  }
}

/** A fresh temporary directory for spill files; `remove()` deletes it and what it holds. */
export function makeSpillDir(): { dir: string; entries: () => string[]; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "colo-disk-test-"));
  return {
    dir,
    entries: () => readdirSync(dir),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** A random write range in a device of `size` bytes: half sector-aligned runs of sectors, half arbitrary. */
export function randomRange(rng: Prng, size: number, maxLength = 3000): { offset: number; length: number } {
  if (rng.chance(0.5)) {
    const sectors = size / 512;
    const offset = rng.int(sectors) * 512;
    const length = Math.min((1 + rng.int(8)) * 512, size - offset);
    return { offset, length };
  }
  const offset = rng.int(size);
  const length = Math.min(1 + rng.int(maxLength), size - offset);
  return { offset, length };
}

/** How many bytes of a 0/1 mask are set (a model's "bytes covered"). */
export function countMarked(mask: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < mask.length; i++) n += mask[i] === 0 ? 0 : 1;
  return n;
}
