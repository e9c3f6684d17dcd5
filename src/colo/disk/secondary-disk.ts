/**
 * The secondary's disk (COLO-PROTOCOL.md §7). Invariant, between checkpoints:
 *
 *   what the SVM reads = (the SVM's own writes since the last checkpoint)
 *                        over (the PVM's disk as of the last checkpoint)
 *
 * The base device always holds "the PVM's disk as of the last checkpoint"
 * (QEMU's secondary image with its hidden overlay folded in). The SVM's
 * writes go to an overlay (QEMU's active disk), never to the base. The PVM's
 * writes forwarded since the last checkpoint wait in a pending log, in seq
 * order, and reach the base only when a checkpoint covers them; the overlay is
 * then discarded (the SVM has just been given the PVM's state). On failover
 * the overlay is committed into the base, the pending PVM writes dropped, and
 * the disk becomes a plain pass-through to the base.
 *
 * Initial sync: until the first checkpoint, `syncWrite()` writes the image
 * copied from the primary straight to the base. The primary must start
 * forwarding writes *before* it reads the first chunk; writes forwarded
 * during the copy wait in the pending log as usual and are applied by the
 * first checkpoint, after every chunk. Each byte then ends as the last
 * forwarded write to it, or (if none) as the chunk copied, which no write
 * changed since: the PVM's disk. No separate tracking is needed.
 *
 * Memory: one budget (`memoryLimitBytes`, default 64 MiB) covers the overlay
 * and the pending log; past it their data spills to two unlinked files in
 * `spillDir` (spill-store.ts). When the backlog (pending + overlay bytes)
 * passes `backlogLimitBytes` (default 256 MiB), `needsCheckpoint` turns true
 * and `onBacklog` is called, once until the next checkpoint: the secondary
 * asks the primary for one (CHECKPOINT_REQUEST), so the overlay the SVM
 * fills, which only a checkpoint empties, stays bounded.
 *
 * Not thread-safe and not re-entrant; the caller owns `base` (close() does not close it).
 */
import type { BlockBackend } from "../../engine/engine.js";
import { checkRange, DiskReplicationError } from "./errors.js";
import { ExtentMap } from "./extent-map.js";
import { PendingWriteLog } from "./pending-writes.js";
import { DEFAULT_MEMORY_LIMIT_BYTES, MemoryBudget, SpillStore } from "./spill-store.js";
import { DEFAULT_HASH_CHUNK_BYTES } from "./image-hash.js";

/** Backlog (pending PVM bytes + SVM overlay bytes) past which `needsCheckpoint` turns true. */
export const DEFAULT_BACKLOG_LIMIT_BYTES = 256 * 2 ** 20;

const SUBJECT = "secondary disk";

export interface SecondaryDiskOptions {
  /** Directory for spill files (a real disk, not tmpfs). */
  spillDir: string;
  /** Memory for overlay + pending data together; default DEFAULT_MEMORY_LIMIT_BYTES (64 MiB). */
  memoryLimitBytes?: number;
  /** Default DEFAULT_BACKLOG_LIMIT_BYTES (256 MiB). */
  backlogLimitBytes?: number;
  /** Overlay spill file garbage before compaction; default DEFAULT_COMPACT_MIN_GARBAGE_BYTES (16 MiB). */
  compactMinGarbageBytes?: number;
  /**
   * The backlog has just passed `backlogLimitBytes`: called once, from inside
   * the write that passed it (do not write to the disk from here), then not
   * again until a checkpoint.
   */
  onBacklog?: () => void;
}

/** replicating: COLO running (the first checkpoint ends the initial sync); failed-over: pass-through to base. */
export type SecondaryDiskMode = "replicating" | "failed-over" | "broken" | "closed";

export interface CheckpointResult {
  /** PVM writes applied to the base. */
  applied: number;
  /** Bytes those writes carried. */
  bytes: number;
}

export interface FailoverResult {
  /** SVM overlay extents committed to the base. */
  committed: number;
  committedBytes: number;
  /** Pending PVM writes dropped. */
  dropped: number;
  droppedBytes: number;
}

export interface SecondaryDiskStats {
  mode: SecondaryDiskMode;
  /** Last primary write received. */
  lastSeq: number;
  /** Seq covered by the last checkpoint (the base holds the PVM's disk as of this write). */
  checkpointSeq: number;
  checkpoints: number;
  pendingWrites: number;
  pendingBytes: number;
  overlayExtents: number;
  overlayBytes: number;
  backlogLimitBytes: number;
  memoryBytes: number;
  memoryLimitBytes: number;
  /** Current size of both spill files. */
  spillFileBytes: number;
  /** Bytes put into spill files since the disk was made (a measure of memory pressure). */
  spilledBytes: number;
  /** Times the overlay's spill file was compacted. */
  overlayCompactions: number;
  svmReads: number;
  svmWrites: number;
  svmBytesWritten: number;
  primaryWrites: number;
  primaryBytes: number;
  appliedWrites: number;
  appliedBytes: number;
  /** SVM overlay bytes discarded by checkpoints. */
  discardedOverlayBytes: number;
  /** Times the backlog passed its limit (each made onBacklog ask for a checkpoint). */
  backlogReports: number;
  syncWrites: number;
  syncBytes: number;
  committedBytes: number;
  droppedWrites: number;
}

export class SecondaryDisk implements BlockBackend {
  readonly byteLength: number;
  private readonly budget: MemoryBudget;
  private readonly overlay: ExtentMap;
  private readonly pending: PendingWriteLog;
  private readonly pendingStore: SpillStore;
  private readonly backlogLimit: number;
  private readonly onBacklog: (() => void) | undefined;
  /** onBacklog was called since the last checkpoint. */
  private backlogReported = false;
  private state: SecondaryDiskMode = "replicating";
  private fault: unknown;
  private received = 0;
  private covered = 0;
  /** 1 MiB chunks of the base written (sync writes, applied PVM writes) since the last takeTouchedChunks(). */
  private touched = new Set<number>();
  private readonly counters = {
    checkpoints: 0,
    svmReads: 0,
    svmWrites: 0,
    svmBytesWritten: 0,
    primaryWrites: 0,
    primaryBytes: 0,
    appliedWrites: 0,
    appliedBytes: 0,
    discardedOverlayBytes: 0,
    backlogReports: 0,
    syncWrites: 0,
    syncBytes: 0,
    committedBytes: 0,
    droppedWrites: 0,
  };

  constructor(
    private readonly base: BlockBackend,
    opts: SecondaryDiskOptions,
  ) {
    this.byteLength = base.byteLength;
    this.backlogLimit = opts.backlogLimitBytes ?? DEFAULT_BACKLOG_LIMIT_BYTES;
    this.onBacklog = opts.onBacklog;
    if (!Number.isSafeInteger(this.backlogLimit) || this.backlogLimit < 0) {
      throw new DiskReplicationError(SUBJECT, "RANGE", `backlog limit ${this.backlogLimit} is not a non-negative integer`);
    }
    this.budget = new MemoryBudget(opts.memoryLimitBytes ?? DEFAULT_MEMORY_LIMIT_BYTES);
    this.overlay = new ExtentMap({
      spillDir: opts.spillDir,
      budget: this.budget,
      label: "svm-overlay",
      compactMinGarbageBytes: opts.compactMinGarbageBytes,
    });
    this.pendingStore = new SpillStore(opts.spillDir, "pvm-pending", this.budget);
    this.pending = new PendingWriteLog(this.pendingStore);
  }

  get mode(): SecondaryDiskMode {
    return this.state;
  }

  /** The last primary write received (0 before any). */
  get lastSeq(): number {
    return this.received;
  }

  /** The primary write the last checkpoint covered (0 before any). */
  get checkpointSeq(): number {
    return this.covered;
  }

  get pendingBytes(): number {
    return this.pending.byteLength;
  }

  get pendingWrites(): number {
    return this.pending.count;
  }

  get overlayBytes(): number {
    return this.overlay.storedBytes;
  }

  /** The backlog passed its limit: the policy should take a checkpoint (COLO-PROTOCOL.md §4 step 1). */
  get needsCheckpoint(): boolean {
    return this.state === "replicating" && this.pendingBytes + this.overlayBytes > this.backlogLimit;
  }

  /** The SVM reads. */
  read(offset: number, length: number): Uint8Array {
    this.requireUsable("read");
    checkRange(SUBJECT, this.byteLength, offset, length);
    this.counters.svmReads++;
    if (this.state === "failed-over") return this.base.read(offset, length);
    return this.overlay.read(offset, length, (o, l) => this.base.read(o, l));
  }

  /** The SVM writes: into the overlay while replicating, to the base after failover. */
  write(offset: number, data: Uint8Array): void {
    this.requireUsable("write");
    checkRange(SUBJECT, this.byteLength, offset, data.length);
    this.counters.svmWrites++;
    this.counters.svmBytesWritten += data.length;
    if (this.state === "failed-over") this.base.write(offset, data);
    else {
      this.overlay.write(offset, data);
      this.checkBacklog();
    }
  }

  private checkBacklog(): void {
    if (this.backlogReported || !this.needsCheckpoint) return;
    this.backlogReported = true;
    this.counters.backlogReports++;
    this.onBacklog?.();
  }

  /** Initial sync: a chunk of the primary's image, straight to the base. Only before the first checkpoint. */
  syncWrite(offset: number, data: Uint8Array): void {
    this.requireReplicating("sync write");
    if (this.counters.checkpoints > 0) {
      throw new DiskReplicationError(SUBJECT, "STATE", "sync write after the first checkpoint (the initial sync is over)");
    }
    checkRange(SUBJECT, this.byteLength, offset, data.length);
    this.touch(offset, data.length);
    this.base.write(offset, data);
    this.counters.syncWrites++;
    this.counters.syncBytes += data.length;
  }

  /** A PVM write forwarded by the primary; `seq` must be exactly lastSeq + 1. Kept until a checkpoint covers it. */
  primaryWrite(seq: number, offset: number, data: Uint8Array): void {
    this.requireReplicating("primary write");
    if (seq !== this.received + 1) {
      throw new DiskReplicationError(SUBJECT, "SEQUENCE", `primary write out of order: expected seq ${this.received + 1}, got ${seq}`);
    }
    checkRange(SUBJECT, this.byteLength, offset, data.length);
    this.pending.append(seq, offset, data);
    this.received = seq;
    this.counters.primaryWrites++;
    this.counters.primaryBytes += data.length;
    this.checkBacklog();
  }

  /**
   * A checkpoint covering the primary's writes up to `uptoSeq` is applied:
   * those writes reach the base in seq order, later ones stay pending, the
   * SVM's overlay is discarded.
   */
  checkpoint(uptoSeq: number): CheckpointResult {
    this.requireReplicating("checkpoint");
    if (!Number.isSafeInteger(uptoSeq) || uptoSeq < this.covered) {
      throw new DiskReplicationError(
        SUBJECT,
        "SEQUENCE",
        `checkpoint up to seq ${uptoSeq} goes back before the previous checkpoint's seq ${this.covered}`,
      );
    }
    if (uptoSeq > this.received) {
      throw new DiskReplicationError(
        SUBJECT,
        "INCOMPLETE",
        `checkpoint covers primary writes up to seq ${uptoSeq} but only up to seq ${this.received} arrived`,
      );
    }
    let result: CheckpointResult;
    try {
      result = this.pending.applyUpTo(uptoSeq, (offset, data) => {
        this.touch(offset, data.length);
        this.base.write(offset, data);
      });
    } catch (err) {
      throw this.broke("applying primary writes at a checkpoint", err);
    }
    this.covered = uptoSeq;
    this.counters.discardedOverlayBytes += this.overlay.storedBytes;
    this.overlay.clear();
    this.backlogReported = false;
    this.counters.checkpoints++;
    this.counters.appliedWrites += result.applied;
    this.counters.appliedBytes += result.bytes;
    return result;
  }

  /**
   * The secondary takes over: the SVM's writes are committed, pending PVM
   * writes dropped; then a pass-through. Refused before the first checkpoint.
   */
  failover(): FailoverResult {
    this.requireReplicating("failover");
    if (this.counters.checkpoints === 0) {
      // The base may be half copied: there is no state to take over from (COLO-PROTOCOL.md §5).
      throw new DiskReplicationError(SUBJECT, "STATE", "failover before the first checkpoint (the initial sync never completed)");
    }
    let committed = 0;
    let committedBytes = 0;
    try {
      for (const { offset, data } of this.overlay.entries()) {
        this.base.write(offset, data);
        committed++;
        committedBytes += data.length;
      }
    } catch (err) {
      throw this.broke("committing the SVM's writes at failover", err);
    }
    this.overlay.close();
    const dropped = this.pending.dropAll();
    this.pending.close();
    this.state = "failed-over";
    this.counters.committedBytes += committedBytes;
    this.counters.droppedWrites += dropped.applied;
    return { committed, committedBytes, dropped: dropped.applied, droppedBytes: dropped.bytes };
  }

  private touch(offset: number, length: number): void {
    const size = DEFAULT_HASH_CHUNK_BYTES;
    for (let c = Math.floor(offset / size); c <= Math.floor((offset + length - 1) / size); c++) this.touched.add(c);
  }

  /**
   * The 1 MiB chunks of the base written (initial-copy chunks, applied PVM
   * writes) since the last call, and a fresh start: what a sync of the
   * base begun now makes durable (secondary-disk-logs.ts).
   */
  takeTouchedChunks(): Set<number> {
    const out = this.touched;
    this.touched = new Set();
    return out;
  }

  /** The chunks (of `chunkBytes`) the SVM's overlay touches, ascending: what a failover would commit. */
  overlayChunks(chunkBytes: number): number[] {
    const out = new Set<number>();
    for (const { offset, length } of this.overlay.ranges()) {
      for (let c = Math.floor(offset / chunkBytes); c <= Math.floor((offset + length - 1) / chunkBytes); c++) out.add(c);
    }
    return [...out].sort((a, b) => a - b);
  }

  stats(): SecondaryDiskStats {
    const overlay = this.overlay.stats();
    const pending = this.pendingStore.stats();
    return {
      mode: this.state,
      lastSeq: this.received,
      checkpointSeq: this.covered,
      pendingWrites: this.pending.count,
      pendingBytes: this.pending.byteLength,
      overlayExtents: overlay.extents,
      overlayBytes: overlay.storedBytes,
      backlogLimitBytes: this.backlogLimit,
      memoryBytes: this.budget.used,
      memoryLimitBytes: this.budget.limitBytes,
      spillFileBytes: overlay.fileBytes + pending.fileBytes,
      spilledBytes: overlay.spilledBytes + pending.spilledBytes,
      overlayCompactions: overlay.compactions,
      ...this.counters,
    };
  }

  /** Releases memory and spill files (the base is the caller's). Idempotent. */
  close(): void {
    if (this.state === "closed") return;
    this.overlay.close();
    this.pending.close();
    this.state = "closed";
  }

  private requireUsable(what: string): void {
    if (this.state === "replicating" || this.state === "failed-over") return;
    throw this.notNow(what);
  }

  private requireReplicating(what: string): void {
    if (this.state !== "replicating") throw this.notNow(what);
  }

  private notNow(what: string): DiskReplicationError {
    const why = this.state === "broken" ? `broken by an earlier failure (${describe(this.fault)})` : this.state;
    return new DiskReplicationError(SUBJECT, "STATE", `${what} not possible: disk is ${why}`);
  }

  /** The base failed mid-update: it no longer holds a state we can name, so nothing more is allowed. */
  private broke(what: string, err: unknown): Error {
    this.fault = err;
    this.state = "broken";
    this.overlay.close();
    this.pending.close();
    if (err instanceof DiskReplicationError) return err;
    return new DiskReplicationError(SUBJECT, "UNDERLYING", `${what}: ${describe(err)}`);
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
