/**
 * A file mapped shared into this process (mmap MAP_SHARED): the way the
 * daemon sees guest RAM that another process (QEMU, with
 * `memory-backend-file,share=on`) maps too. Writes through `bytes` are the
 * guest's memory, and the guest's writes show in `bytes`, with no copy.
 *
 * Releasing: after `release()` the address range is replaced by private
 * anonymous memory (mmap MAP_FIXED) instead of being unmapped, so a view
 * someone still holds reads zeros instead of crashing the process (a
 * koffi view cannot be detached). The file itself is then no longer mapped
 * by us; the address space is returned when the process ends.
 */
import {
  MAP_ANONYMOUS,
  MAP_FAILED,
  MAP_FIXED,
  MAP_PRIVATE,
  MAP_SHARED,
  O_CLOEXEC,
  O_CREAT,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  close,
  ftruncate,
  mmap,
  openMode,
  viewOf,
} from "./libc.js";
import { sysErrorNow } from "./errors.js";
import { unlinkSync } from "node:fs";

/** koffi.view's limit (ENGINE-NOTES.md: 8 GiB aborts the process). */
const MAX_MAPPING = 4 * 2 ** 30;

export interface SharedMapping {
  /**
   * A path that opens the mapped file: the file's own path, or with
   * `anonymous`, /proc/<pid>/fd/<fd> of the descriptor we keep (the file
   * itself is already unlinked).
   */
  readonly path: string;
  readonly length: number;
  /** The mapped bytes; reads zeros after release(). */
  readonly bytes: Uint8Array;
  readonly released: boolean;
  /** Drops our mapping of the file; idempotent. */
  release(): void;
}

/**
 * Maps `length` bytes of `path` read-write and shared. With `create`, the
 * file is created (mode 0600) if missing; its size is set to `length`
 * (extending with zeros, or truncating).
 *
 * With `anonymous`, the file is unlinked as soon as it is mapped and the
 * descriptor kept open: another process opens it through `path`
 * (/proc/<our pid>/fd/<fd>), and its memory is freed when the last process
 * mapping it ends, even if this one is SIGKILLed — guest RAM in a tmpfs
 * file never outlives its VM.
 */
export function mapSharedFile(path: string, length: number, opts: { create?: boolean; anonymous?: boolean } = {}): SharedMapping {
  if (!Number.isSafeInteger(length) || length <= 0 || length > MAX_MAPPING || length % 4096 !== 0) {
    throw new RangeError(`mapSharedFile(${path}): length ${length} must be a multiple of 4096 from 4096 to ${MAX_MAPPING}`);
  }
  const fd = openMode(path, O_RDWR | O_CLOEXEC | (opts.create === true ? O_CREAT : 0), 0o600);
  if (fd < 0) throw sysErrorNow(`open(${path})`);
  let pointer: bigint;
  const keepFd = opts.anonymous === true;
  try {
    if (ftruncate(fd, length) < 0) throw sysErrorNow(`ftruncate(${path}, ${length})`);
    pointer = mmap(null, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (pointer === MAP_FAILED) throw sysErrorNow(`mmap(${path}, ${length})`);
    if (keepFd) unlinkSync(path);
  } catch (e) {
    close(fd);
    throw e;
  }
  // Without `anonymous` the mapping keeps the file referenced; the descriptor is not needed.
  if (!keepFd) close(fd);
  const bytes = new Uint8Array(viewOf(pointer, length));
  let released = false;
  return {
    path: keepFd ? `/proc/${process.pid}/fd/${fd}` : path,
    length,
    bytes,
    get released() {
      return released;
    },
    release(): void {
      if (released) return;
      const r = mmap(pointer, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
      if (r === MAP_FAILED) throw sysErrorNow(`mmap(MAP_FIXED anonymous over ${path})`);
      if (keepFd) close(fd);
      released = true;
    },
  };
}
