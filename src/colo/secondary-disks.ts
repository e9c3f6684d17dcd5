/**
 * The secondary's replicated disks (docs/replication.md "Disk
 * replication"): each DISK_INFO compared with this side's image (the chunks
 * to copy), a SecondaryDisk put in front of the image, the primary's writes
 * kept until a checkpoint covers them, each checkpoint's disk part, and the
 * takeover's commit. Keeping and applying writes are local operations
 * (local-failure.ts): this side's image or spill files failing steps the
 * secondary down, records that do not fit are the primary's.
 */
import type { BlockBackend } from "../engine/engine.js";
import type { DiskInfo, DiskPlan, DiskWrite } from "../state/index.js";
import type { DiskLog } from "./disk/image-log.js";
import { chunksToCopy, hashBackend, type ImageHashes } from "./disk/image-hash.js";
import { SecondaryDisk, type FailoverResult } from "./disk/secondary-disk.js";
import { localDisk } from "./local-failure.js";

export interface SecondaryDiskSlot {
  /** Index in the VM config's disk list. */
  readonly index: number;
  /** The secondary's own image (the base: the PVM's disk as of the last checkpoint). */
  readonly raw: BlockBackend;
  /** Where the spill files of this disk's overlays go. */
  readonly spillDir: string;
  /** Put the replication layer in front of the image (the engine reads through it). */
  interpose(layer: BlockBackend): void;
  /** The image's activity log (absent: none is kept; secondary-disk-logs.ts). */
  readonly log?: DiskLog;
  /** fdatasync the image off the event loop (absent: `raw.flush()`). */
  sync?(): Promise<void>;
}

export interface SecondaryDisksOptions {
  /** Per disk: SVM overlay + pending PVM bytes past which `onBacklog` is called; default DEFAULT_BACKLOG_LIMIT_BYTES. */
  backlogLimitBytes: number | undefined;
  /** Only a checkpoint empties a disk's SVM overlay: ask the primary for one (once until it comes). */
  onBacklog: (disk: number) => void;
  log: (msg: string, fields?: Record<string, unknown>) => void;
}

export class SecondaryDisks {
  private readonly disks = new Map<number, SecondaryDisk>();

  constructor(
    private readonly slots: readonly SecondaryDiskSlot[],
    private readonly opts: SecondaryDisksOptions,
  ) {}

  private slotFor(disk: number, size: number): SecondaryDiskSlot {
    const slot = this.slots.find((d) => d.index === disk);
    if (!slot) throw new Error(`the primary replicates disk ${disk}, which this VM's config does not have as a writable disk`);
    if (slot.raw.byteLength !== size) throw new Error(`disk ${disk}: the primary's image is ${size} bytes, this one ${slot.raw.byteLength}`);
    if (this.disks.has(disk)) throw new Error(`disk ${disk} announced twice (DISK_INFO or DISK_PLAN)`);
    return slot;
  }

  private interpose(slot: SecondaryDiskSlot): void {
    const disk = new SecondaryDisk(slot.raw, {
      spillDir: slot.spillDir,
      ...(this.opts.backlogLimitBytes !== undefined ? { backlogLimitBytes: this.opts.backlogLimitBytes } : {}),
      onBacklog: () => this.opts.onBacklog(slot.index),
    });
    this.disks.set(slot.index, disk);
    slot.interpose(disk);
  }

  /** DISK_PLAN: the comparison is done (the activity logs proved which chunks can differ): the layer in front of the image, the plan's chunks to ask for. */
  adopt(plan: DiskPlan): number[] {
    const slot = this.slotFor(plan.disk, plan.size);
    this.interpose(slot);
    this.opts.log("disk plan from the activity logs: no hashing", { disk: plan.disk, chunks: Math.ceil(plan.size / plan.chunkSize), differing: plan.chunks.length });
    return [...plan.chunks];
  }

  /** The disks announced so far (DISK_INFO or DISK_PLAN). */
  get replicated(): ReadonlySet<number> {
    return new Set(this.disks.keys());
  }

  /** Per replicated disk: the chunks of its base written since the last call (SecondaryDisk.takeTouchedChunks). */
  takeTouchedChunks(): Map<number, Set<number>> {
    return new Map([...this.disks].map(([index, d]) => [index, d.takeTouchedChunks()]));
  }

  /** Per replicated disk: the chunks its SVM overlay touches (what a takeover commits). */
  overlayChunks(chunkBytes: number): Map<number, number[]> {
    return new Map([...this.disks].map(([index, d]) => [index, d.overlayChunks(chunkBytes)]));
  }

  /** DISK_INFO: this side's image hashed and compared, the replication layer put in front of it; the chunks to ask for (DISK_WANT). */
  async compare(info: DiskInfo): Promise<number[]> {
    const slot = this.slotFor(info.disk, info.size);
    const mine = await hashBackend(slot.raw, { chunkBytes: info.chunkSize });
    const theirs: ImageHashes = {
      byteLength: info.size,
      chunkBytes: info.chunkSize,
      sha256: "",
      chunks: info.chunkHashes.map((h) => Buffer.from(h).toString("hex")),
    };
    const want = chunksToCopy(theirs, { ...mine, sha256: "-" });
    this.interpose(slot);
    this.opts.log("disk compared with the primary's", { disk: info.disk, chunks: mine.chunks.length, differing: want.length });
    return want;
  }

  /** A DISK_WRITE: a chunk of the initial sync (seq 0), or a PVM write kept until a checkpoint covers it. */
  write(w: DiskWrite): void {
    const disk = this.disks.get(w.disk);
    if (!disk) throw new Error(`a write for disk ${w.disk}, which the primary did not announce with DISK_INFO`);
    localDisk(`disk ${w.disk}: keeping the primary's write`, () => (w.seq === 0 ? disk.syncWrite(w.offset, w.data) : disk.primaryWrite(w.seq, w.offset, w.data)));
  }

  /** A checkpoint's disk part (`covers`: disk -> the last PVM write it covers): applied to every disk; the bytes applied. */
  checkpoint(covers: ReadonlyMap<number, number>, what: string): number {
    let bytes = 0;
    for (const [index, disk] of this.disks) {
      const upto = covers.get(index);
      if (upto === undefined) throw new Error(`${what} says nothing about disk ${index}`);
      bytes += localDisk(`disk ${index}: applying ${what}`, () => disk.checkpoint(upto)).bytes;
    }
    return bytes;
  }

  /** Takeover: every disk commits the SVM's writes and drops the PVM's not yet covered. */
  failover(): FailoverResult[] {
    return [...this.disks.values()].map((d) => d.failover());
  }

  /** SHA-256 of each replicated disk's base: the PVM's disk as of the last applied checkpoint (or, after failover, the survivor's disk). */
  async hashes(): Promise<{ disk: number; sha256: string }[]> {
    const out: { disk: number; sha256: string }[] = [];
    // Hashed in chunks, yielding to the event loop (heartbeats go on); a checkpoint applied meanwhile would show as a mismatch.
    for (const d of this.slots.filter((x) => this.disks.has(x.index))) out.push({ disk: d.index, sha256: (await hashBackend(d.raw)).sha256 });
    return out;
  }

  stats(): Record<string, unknown>[] {
    return [...this.disks].map(([index, d]) => ({ disk: index, ...d.stats() }));
  }
}
