/**
 * Byte storage that stays within a memory budget: runs of bytes are kept in
 * memory while the budget allows and are appended to a spill file past it.
 *
 * The spill file is created on the first spill in the directory given, with
 * a unique name (`colo-disk-<label>-<pid>-<random>.spill`), and unlinked at
 * once: it has no name while in use, so nothing is left behind when the
 * process dies (its contents are worthless after a restart anyway: replication
 * starts again from an initial sync). It is append-only: a run is written
 * once at the end and addressed by its file position; released runs become
 * garbage in the file until `clear()` truncates it to zero or `compact()`
 * copies the live runs into a fresh file. Pick a directory on a real disk:
 * a spill file on tmpfs is memory again.
 *
 * Accounting is by logical bytes. A memory run cut down by `slice()` is kept
 * as a view of its buffer only when it is at least half of that buffer (else
 * it is copied out), so the memory actually held is at most twice what the
 * budget counts. Per-run bookkeeping (a few dozen bytes each) is not counted.
 */
import { randomBytes } from "node:crypto";
import { closeSync, fstatSync, ftruncateSync, openSync, readSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";
import { DiskReplicationError } from "./errors.js";

/** Default memory for replication data (SVM overlay + pending PVM writes together) before spilling. */
export const DEFAULT_MEMORY_LIMIT_BYTES = 64 * 2 ** 20;

/** A memory allowance shared by several stores (one secondary disk's overlay and pending log). */
export class MemoryBudget {
  private usedBytes = 0;

  constructor(readonly limitBytes: number) {
    if (!Number.isSafeInteger(limitBytes) || limitBytes < 0) {
      throw new DiskReplicationError("memory budget", "RANGE", `limit ${limitBytes} is not a non-negative integer`);
    }
  }

  get used(): number {
    return this.usedBytes;
  }

  /** Takes `n` bytes if they fit under the limit. */
  tryTake(n: number): boolean {
    if (this.usedBytes + n > this.limitBytes) return false;
    this.usedBytes += n;
    return true;
  }

  /** Takes `n` bytes regardless of the limit: only for bytes carved out of runs just given back. */
  take(n: number): void {
    this.usedBytes += n;
  }

  give(n: number): void {
    this.usedBytes -= n;
  }
}

/** A run held in memory; `bytes` is private to the store (a copy of what was put). */
export interface MemoryRun {
  readonly where: "memory";
  readonly bytes: Uint8Array;
}

/** A run in the spill file. `position` is moved by `SpillStore.compact()`. */
export interface FileRun {
  readonly where: "file";
  position: number;
  readonly length: number;
}

export type StoredRun = MemoryRun | FileRun;

export interface SpillStoreStats {
  /** Bytes of runs held in memory (counted against the budget). */
  memoryBytes: number;
  /** Size of the spill file (live runs and garbage). */
  fileBytes: number;
  /** Bytes of the spill file still referenced by live runs. */
  liveFileBytes: number;
  /** Runs put into the spill file since the store was made (compaction copies not counted). */
  spilledRuns: number;
  /** Bytes of those runs. */
  spilledBytes: number;
  compactions: number;
}

export class SpillStore {
  private fd: number | undefined;
  private path = "";
  private fileEnd = 0;
  private liveFile = 0;
  private memory = 0;
  private spilledRuns = 0;
  private spilledBytes = 0;
  private compactions = 0;
  private closed = false;

  constructor(
    private readonly dir: string,
    /** Names the store in errors and in the spill file's name: [a-z0-9-]. */
    private readonly label: string,
    private readonly budget: MemoryBudget,
  ) {}

  /** Bytes in the spill file no live run refers to. */
  get garbageBytes(): number {
    return this.fileEnd - this.liveFile;
  }

  get liveFileBytes(): number {
    return this.liveFile;
  }

  /** Stores a copy of `data`: in memory if the budget allows, else at the end of the spill file. */
  put(data: Uint8Array): StoredRun {
    this.requireOpen();
    if (this.budget.tryTake(data.length)) {
      const bytes = new Uint8Array(data.length);
      bytes.set(data);
      this.memory += data.length;
      return { where: "memory", bytes };
    }
    const position = this.append(data);
    this.liveFile += data.length;
    this.spilledRuns++;
    this.spilledBytes += data.length;
    return { where: "file", position, length: data.length };
  }

  /** Copies run bytes [start, start+length) into `into` at `intoOffset`. */
  readInto(run: StoredRun, start: number, length: number, into: Uint8Array, intoOffset: number): void {
    if (run.where === "memory") {
      into.set(run.bytes.subarray(start, start + length), intoOffset);
      return;
    }
    const fd = this.requireFd();
    let done = 0;
    while (done < length) {
      let n: number;
      try {
        n = readSync(fd, into, intoOffset + done, length - done, run.position + start + done);
      } catch (err) {
        throw this.fail(`read of ${length} bytes at ${run.position + start}`, err);
      }
      if (n === 0) throw new DiskReplicationError(this.subject(), "SPILL", `short read at ${run.position + start + done}`);
      done += n;
    }
  }

  /** The whole run. A memory run is returned as a view: the caller must not modify it. */
  load(run: StoredRun): Uint8Array {
    if (run.where === "memory") return run.bytes;
    const out = new Uint8Array(run.length);
    this.readInto(run, 0, run.length, out, 0);
    return out;
  }

  /**
   * A new run for bytes [start, end) of `run`, without reading a spilled run.
   * The caller then releases `run` (slices are taken first, then the original given back).
   */
  slice(run: StoredRun, start: number, end: number): StoredRun {
    const length = end - start;
    if (run.where === "file") {
      this.liveFile += length;
      return { where: "file", position: run.position + start, length };
    }
    this.memory += length;
    this.budget.take(length);
    const view = run.bytes.subarray(start, end);
    if (length * 2 >= view.buffer.byteLength) return { where: "memory", bytes: view };
    const bytes = new Uint8Array(length);
    bytes.set(view);
    return { where: "memory", bytes };
  }

  /** Undoes a `release()` of a run whose bytes are still there (a write that failed part-way). */
  retain(run: StoredRun): void {
    if (run.where === "memory") {
      this.memory += run.bytes.length;
      this.budget.take(run.bytes.length);
    } else {
      this.liveFile += run.length;
    }
  }

  release(run: StoredRun): void {
    if (run.where === "memory") {
      this.memory -= run.bytes.length;
      this.budget.give(run.bytes.length);
    } else {
      this.liveFile -= run.length;
    }
  }

  /**
   * Copies the live file runs (all of them: any run left out is lost) into a
   * fresh spill file, in the order given, and moves their positions. Costs one
   * read and one write of the live bytes.
   */
  compact(live: Iterable<FileRun>): void {
    const oldFd = this.fd;
    if (oldFd === undefined) return;
    const oldPath = this.path;
    this.fd = undefined;
    this.fileEnd = 0;
    let moved = 0;
    try {
      for (const run of live) {
        const bytes = new Uint8Array(run.length);
        this.readFrom(oldFd, oldPath, bytes, run.position);
        run.position = this.append(bytes);
        moved += run.length;
      }
    } catch (err) {
      throw err instanceof DiskReplicationError ? err : this.fail("compaction", err);
    } finally {
      closeSync(oldFd);
    }
    this.liveFile = moved;
    this.compactions++;
  }

  /** Forgets every run: memory goes back to the budget, the spill file is truncated to zero. */
  clear(): void {
    this.budget.give(this.memory);
    this.memory = 0;
    this.liveFile = 0;
    this.fileEnd = 0;
    if (this.fd !== undefined) {
      try {
        ftruncateSync(this.fd, 0);
      } catch (err) {
        throw this.fail("truncate", err);
      }
    }
  }

  /** Clears and closes the spill file; the store cannot be used afterwards. */
  close(): void {
    if (this.closed) return;
    this.clear();
    this.closed = true;
    if (this.fd !== undefined) {
      closeSync(this.fd);
      this.fd = undefined;
    }
  }

  stats(): SpillStoreStats {
    let fileBytes = 0;
    if (this.fd !== undefined) fileBytes = fstatSync(this.fd).size;
    return {
      memoryBytes: this.memory,
      fileBytes,
      liveFileBytes: this.liveFile,
      spilledRuns: this.spilledRuns,
      spilledBytes: this.spilledBytes,
      compactions: this.compactions,
    };
  }

  private append(data: Uint8Array): number {
    const fd = this.fd ?? this.create();
    const position = this.fileEnd;
    let done = 0;
    try {
      while (done < data.length) done += writeSync(fd, data, done, data.length - done, position + done);
    } catch (err) {
      throw this.fail(`write of ${data.length} bytes at ${position}`, err);
    }
    this.fileEnd += data.length;
    return position;
  }

  private readFrom(fd: number, path: string, into: Uint8Array, position: number): void {
    let done = 0;
    while (done < into.length) {
      const n = readSync(fd, into, done, into.length - done, position + done);
      if (n === 0) throw new DiskReplicationError(`spill file ${path}`, "SPILL", `short read at ${position + done}`);
      done += n;
    }
  }

  private create(): number {
    const path = join(this.dir, `colo-disk-${this.label}-${process.pid}-${randomBytes(6).toString("hex")}.spill`);
    let fd: number;
    try {
      fd = openSync(path, "wx+", 0o600);
    } catch (err) {
      throw new DiskReplicationError(`spill file ${path}`, "SPILL", `cannot create: ${describe(err)}`);
    }
    try {
      unlinkSync(path);
    } catch (err) {
      closeSync(fd);
      throw new DiskReplicationError(`spill file ${path}`, "SPILL", `cannot unlink after creation: ${describe(err)}`);
    }
    this.fd = fd;
    this.path = path;
    return fd;
  }

  private requireOpen(): void {
    if (this.closed) throw new DiskReplicationError(this.subject(), "STATE", "store is closed");
  }

  private requireFd(): number {
    if (this.fd === undefined) throw new DiskReplicationError(this.subject(), "SPILL", "no spill file (store cleared or closed)");
    return this.fd;
  }

  private subject(): string {
    return this.path === "" ? `spill store ${this.label} in ${this.dir}` : `spill file ${this.path}`;
  }

  private fail(what: string, err: unknown): DiskReplicationError {
    return new DiskReplicationError(this.subject(), "SPILL", `${what} failed: ${describe(err)}`);
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) return (err as NodeJS.ErrnoException).code ?? err.message;
  return String(err);
}
