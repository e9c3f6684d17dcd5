/**
 * The primary's half of disk replication (COLO-PROTOCOL.md §7; issue 6):
 * every write of the PVM lands on the local image (the VM layer does that)
 * and goes, numbered 1, 2, 3... per disk, to the secondary as DISK_WRITE
 * on the replication stream (pipelined: nothing waits for the secondary;
 * authenticated and ordered by the stream's TLS connection). Each
 * checkpoint records the last write it covers (DISK_CHECKPOINT).
 *
 * Initial sync: forwarding starts first, then DISK_INFO (per-chunk SHA-256
 * of the image; the writes made meanwhile follow it); the secondary answers DISK_WANT with the chunks that
 * differ on its image, and those are copied as seq-0 writes read from the
 * local image at the time of sending. A write racing a copy is forwarded
 * after it on the same stream, so the secondary ends up with the newer data
 * either way.
 */
import type { BlockBackend } from "../engine/engine.js";
import type { StreamWriter } from "../state/index.js";
import { MAX_DISK_WRITE_DATA } from "../state/index.js";
import type { BackChannel } from "./back-channel.js";
import { chunkRange, DEFAULT_HASH_CHUNK_BYTES, hashBackend } from "./disk/image-hash.js";
import type { WriteLock } from "./heartbeat.js";
import type { DiskLog } from "./disk/image-log.js";
import { elapsedMs, monotonicMs } from "../sys/clock.js";

/** Writes held while the images are hashed, again during the initial memory transfer, and in a checkpoint from NEW to the PVM's pause, at most: past it, the start or the checkpoint fails (a start can be retried). */
export const MAX_HELD_BYTES = 256 * 2 ** 20;

export interface ForwardedDisk {
  /** Index in the VM config's disk list (the stream's disk number). */
  readonly index: number;
  /** The local image: reads for hashing and copying. */
  readonly local: BlockBackend;
  /** Start (or, with undefined, stop) seeing every guest write after it landed locally. */
  setWriteHook(hook: ((offset: number, data: Uint8Array) => void) | undefined): void;
  /** The image's activity log (primary-disk-logs.ts; absent: none kept). */
  readonly log?: DiskLog;
  /** fdatasync the image off the event loop (absent: `local.flush()`). */
  sync?(): Promise<void>;
}

/** Per disk: the chunks to copy that the activity logs proved (DISK_PLAN instead of DISK_INFO), or undefined (hash compare). */
export type DiskPlanner = (index: number, size: number) => number[] | undefined;

interface DiskState {
  readonly disk: ForwardedDisk;
  /**
   * Writes made after forwarding started and before this disk's DISK_INFO
   * is on the stream (the guest writes while its image is hashed): sent
   * right after the DISK_INFO. A write racing the hash is then either in
   * the hash (its chunk differs and is copied, read at sending) or after
   * it (the write itself follows): the secondary ends up with it either way.
   */
  early?: { disk: number; seq: number; offset: number; data: Uint8Array }[];
  lastSeq: number;
  writes: number;
  bytes: number;
}

/** A numbered write held in memory until its checkpoint is written. */
interface HeldWrite {
  index: number;
  seq: number;
  offset: number;
  data: Uint8Array;
}

/** Taken while the PVM is paused (seal()): what a checkpoint covers per disk, and the writes held for it. */
export interface SealedWrites {
  readonly covers: ReadonlyMap<number, number>;
  readonly held: readonly HeldWrite[];
}

export interface DiskSyncResult {
  disks: number;
  /** Disks whose chunks to copy the activity logs proved (no hashing). */
  byLog: number;
  chunksCopied: number;
  bytesCopied: number;
  ms: number;
}

export class DiskForwarder {
  private readonly states: DiskState[];
  /** While the memory part of the initial sync is open, writes wait here (a toolstack record cannot go inside it). */
  private held: HeldWrite[] | undefined;
  private heldBytes = 0;
  /** Bytes queued in the disks' `early` lists (bounded like the held writes: past it the start fails). */
  private earlyBytes = 0;
  private sinceCheckpoint = 0;
  private stopped = false;
  private failure: Error | undefined;

  constructor(
    disks: readonly ForwardedDisk[],
    private readonly writer: StreamWriter,
    private readonly lock: WriteLock,
    private readonly backlogBytes: number,
    private readonly onBacklog: () => void,
    /** Every forwarded write (its disk and range), after it landed: the session's epochs (primary-disk-logs.ts). */
    private readonly onForward: (index: number, offset: number, length: number) => void = () => undefined,
  ) {
    this.states = disks.map((disk) => ({ disk, lastSeq: 0, writes: 0, bytes: 0 }));
  }

  /**
   * Hook every disk, exchange hashes (or, where `planner` has a plan from
   * the activity logs, send it instead: no hashing), copy what differs.
   * Resolves before the memory transfer may start.
   */
  async initialSync(back: BackChannel, planner?: DiskPlanner): Promise<DiskSyncResult> {
    const t0 = monotonicMs();
    const result: DiskSyncResult = { disks: this.states.length, byLog: 0, chunksCopied: 0, bytesCopied: 0, ms: 0 };
    if (this.states.length === 0) return result;
    for (const s of this.states) {
      s.early = [];
      s.disk.setWriteHook((offset, data) => this.forward(s, offset, data));
    }
    const chunkSize = DEFAULT_HASH_CHUNK_BYTES;
    for (const s of this.states) {
      // Asked once forwarding runs: a write after the plan was read is forwarded, one before is in the log it came from.
      const plan = planner?.(s.disk.index, s.disk.local.byteLength);
      if (plan) result.byLog++;
      const hashes = plan ? undefined : await hashBackend(s.disk.local, { chunkBytes: chunkSize });
      await this.lock.run(async () => {
        const size = s.disk.local.byteLength;
        if (plan) await this.writer.writeDiskPlan({ disk: s.disk.index, chunkSize, size, chunks: plan });
        else await this.writer.writeDiskInfo({ disk: s.disk.index, chunkSize, size, chunkHashes: (hashes?.chunks ?? []).map((h) => Uint8Array.from(Buffer.from(h, "hex"))) });
        // The writes made before DISK_INFO follow it, in order (the secondary knows no disk before its DISK_INFO).
        for (let w = s.early?.shift(); w; w = s.early?.shift()) await this.writeChunked(w);
        s.early = undefined;
      });
      this.throwIfFailed();
    }
    for (let n = 0; n < this.states.length; n++) {
      const r = await back.next();
      if (r.kind !== "disk-want") throw new Error(`expected DISK_WANT from the secondary, got ${r.kind}`);
      const s = this.states.find((x) => x.disk.index === r.want.disk);
      if (!s) throw new Error(`the secondary asked for chunks of disk ${r.want.disk}, which is not replicated`);
      for (const chunk of r.want.chunks) {
        const { offset, length } = chunkRange(chunk, chunkSize, s.disk.local.byteLength);
        for (let at = 0; at < length; at += MAX_DISK_WRITE_DATA) {
          const n = Math.min(MAX_DISK_WRITE_DATA, length - at);
          // Read at the time of sending: later writes follow on the stream.
          await this.lock.run(() => {
            const data = Uint8Array.from(s.disk.local.read(offset + at, n));
            return this.writer.writeDiskWrite({ disk: s.disk.index, seq: 0, offset: offset + at, data });
          });
          result.bytesCopied += n;
        }
        result.chunksCopied++;
      }
    }
    this.throwIfFailed();
    result.ms = elapsedMs(t0);
    return result;
  }

  /**
   * From now until writeCheckpoint() (the initial memory part is open, and
   * a toolstack record cannot go inside it): writes are numbered and held in
   * memory, at most MAX_HELD_BYTES (the live transfer takes about a second).
   */
  async holdUntilCheckpoint(): Promise<void> {
    this.holdWrites();
    // Writes forwarded before now are queued on the lock: they must reach the stream before the memory part opens.
    await this.lock.run(() => Promise.resolve());
    this.throwIfFailed();
  }

  /**
   * A checkpoint's NEW is next (under the write lock): from now until
   * seal(), writes are numbered and held in memory, at most MAX_HELD_BYTES
   * (no record may come between NEW and the memory part; the PVM runs on
   * until the secondary has suspended). writeCheckpoint() writes them
   * before DISK_CHECKPOINT, which covers them.
   */
  holdWrites(): void {
    if (this.held) return;
    this.held = [];
    this.heldBytes = 0;
  }

  private forward(s: DiskState, offset: number, data: Uint8Array): void {
    if (this.stopped) return;
    const seq = ++s.lastSeq;
    const copy = Uint8Array.from(data);
    s.writes++;
    s.bytes += copy.length;
    this.onForward(s.disk.index, offset, copy.length);
    this.sinceCheckpoint += copy.length;
    const write = { disk: s.disk.index, seq, offset, data: copy };
    if (s.early) {
      s.early.push(write);
      this.earlyBytes += copy.length;
      if (this.earlyBytes > MAX_HELD_BYTES) this.failure ??= new Error(`more than ${MAX_HELD_BYTES} bytes written while the disk images were hashed`);
    } else if (this.held) {
      this.held.push({ index: s.disk.index, seq, offset, data: copy });
      this.heldBytes += copy.length;
      if (this.heldBytes > MAX_HELD_BYTES) this.failure ??= new Error(`more than ${MAX_HELD_BYTES} bytes written while a checkpoint's writes were held`);
    } else {
      this.lock.run(() => this.writeChunked(write)).catch((err: unknown) => (this.failure ??= err as Error));
    }
    if (this.sinceCheckpoint > this.backlogBytes) this.onBacklog();
  }

  private async writeChunked(w: { disk: number; seq: number; offset: number; data: Uint8Array }): Promise<void> {
    // One guest write is one record; v86 never writes more than a few hundred KiB at once.
    if (w.data.length > MAX_DISK_WRITE_DATA) throw new Error(`a guest write of ${w.data.length} bytes exceeds ${MAX_DISK_WRITE_DATA}`);
    await this.writer.writeDiskWrite(w);
  }

  /**
   * While the PVM is paused: per disk the last write issued so far (what a
   * checkpoint taken now covers) and the writes held for it. It stays right
   * when the PVM resumes before the checkpoint is written: its new writes
   * are no longer held, they queue on the lock behind the checkpoint (higher
   * seqs) and count toward the next checkpoint's backlog.
   */
  seal(): SealedWrites {
    const covers = new Map(this.states.map((s) => [s.disk.index, s.lastSeq]));
    const held = this.held ?? [];
    this.held = undefined;
    this.heldBytes = 0;
    this.sinceCheckpoint = 0;
    return { covers, held };
  }

  /**
   * Inside a checkpoint (after the memory CHECKPOINT, under the write lock):
   * the writes held for it (the initial memory part's, or from NEW to the
   * pause), then one DISK_CHECKPOINT per disk with the last write it covers.
   */
  async writeCheckpoint(sealed: SealedWrites = this.seal()): Promise<void> {
    this.throwIfFailed();
    for (const h of sealed.held) await this.writeChunked({ disk: h.index, seq: h.seq, offset: h.offset, data: h.data });
    for (const s of this.states) await this.writer.writeDiskCheckpoint({ disk: s.disk.index, uptoSeq: sealed.covers.get(s.disk.index) ?? s.lastSeq });
  }

  /** The secondary is gone: the local images go on alone. */
  stop(): void {
    this.stopped = true;
    for (const s of this.states) s.disk.setWriteHook(undefined);
  }

  private throwIfFailed(): void {
    if (this.failure) throw new Error(`forwarding a disk write: ${this.failure.message}`);
  }

  stats(): { disk: number; lastSeq: number; writes: number; bytes: number }[] {
    return this.states.map((s) => ({ disk: s.disk.index, lastSeq: s.lastSeq, writes: s.writes, bytes: s.bytes }));
  }
}
