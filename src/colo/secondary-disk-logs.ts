/**
 * The secondary's activity logs in a replication session (docs/specs/
 * activity-log.md; docs/operations.md "Re-protection"):
 *
 * - At once, as the back channel's first record (DISK_LOG): a new lineage
 *   for this session and, per writable disk, what the log beside its image
 *   says (the primary decides from it whether the hash compare can be
 *   skipped).
 * - Before the first write to an image (at its DISK_INFO or DISK_PLAN):
 *   its old log is deleted (durably): the image is about to change under a
 *   new lineage.
 * - After a checkpoint is applied, at most every `syncIntervalMs`, off the
 *   event loop: every replicated image is fdatasync'ed; the first time,
 *   each then gets its log {lineage, replica} (no chunks: it holds only the
 *   primary's writes, as of a checkpoint at least as late as any the
 *   primary clears its log to); then DISK_SYNCED tells the primary which
 *   checkpoint the images hold durably (it drops chunks from its log only
 *   up to there).
 * - Takeover from checkpoint C, before the SVM's overlay is committed: the
 *   log becomes {lineage, survivor, C, chunks}, marking every later write
 *   (write-ahead). The chunks: the overlay's, and every chunk of the base
 *   written since the last sync that completed (a crash of this host may
 *   still undo those), so the takeover waits for no fdatasync.
 * - Writable disks the primary did not replicate: their logs are deleted
 *   after checkpoint 0 (the guest writes them without a log).
 */
import { randomBytes } from "node:crypto";
import { DISK_LOG_FLAG_PRESENT, type DiskLogEntry, type DiskLogReport } from "../state/index.js";
import { LOG_KIND_CODE } from "./disk/activity-log.js";
import { DEFAULT_HASH_CHUNK_BYTES } from "./disk/image-hash.js";
import type { SecondaryDiskSlot } from "./secondary-disks.js";
import { monotonicMs } from "../sys/clock.js";
import { localSync } from "./local-failure.js";

/** Chunk indexes one DISK_LOG carries at most (its body stays under the 64 MiB record bound); past it, logs are reported absent. */
const MAX_REPORTED_CHUNKS = 15 * 2 ** 20;

/** fdatasync the images (and tell the primary, DISK_SYNCED) at most this often (ms). */
export const DEFAULT_DISK_SYNC_INTERVAL_MS = 1000;

export interface SecondaryDiskLogOptions {
  log: (msg: string, fields?: Record<string, unknown>) => void;
  syncIntervalMs?: number;
  now?: () => number;
}

const NO_LINEAGE = new Uint8Array(16);

/** What the logs need of the session's disks (SecondaryDisks). */
export interface LoggedDisks {
  /** The disks the primary announced (DISK_INFO or DISK_PLAN). */
  readonly replicated: ReadonlySet<number>;
  /** Per disk, the chunks of its base written since the last call. */
  takeTouchedChunks(): Map<number, Set<number>>;
}

export class SecondaryDiskLogs {
  /** This session's lineage (DISK_LOG). */
  readonly lineage: Uint8Array = Uint8Array.from(randomBytes(16));
  private lastSync: number | undefined;
  private syncing: Promise<void> | undefined;
  private replicaWritten = false;
  private tookOver = false;
  /** Per disk: chunks written to the base that no completed sync covers yet (taken from the disks when a sync starts). */
  private unsynced = new Map<number, Set<number>>();
  private readonly now: () => number;
  /** DISK_SYNCED sent (status, tests). */
  syncs = 0;

  constructor(
    private readonly slots: readonly SecondaryDiskSlot[],
    private readonly disks: LoggedDisks,
    private readonly opts: SecondaryDiskLogOptions,
  ) {
    this.now = opts.now ?? monotonicMs;
  }

  /** DISK_LOG: the lineage and what each writable image's log says. */
  report(): DiskLogReport {
    let room = MAX_REPORTED_CHUNKS;
    const disks: DiskLogEntry[] = [...this.slots]
      .sort((a, b) => a.index - b.index)
      .map((slot) => {
        const absent: DiskLogEntry = { disk: slot.index, flags: 0, lineage: NO_LINEAGE, kind: 0, chunkSize: 0, seq: 0, size: 0, chunks: [] };
        const r = slot.log?.read() ?? { kind: "none" as const };
        if (r.kind === "bad") this.opts.log("the activity log of this image is unreadable: reported as none", { disk: slot.index, problem: r.problem });
        if (r.kind !== "ok") return absent;
        if (r.log.chunks.length > room) {
          this.opts.log("too many chunks marked to report this image's log: reported as none", { disk: slot.index, chunks: r.log.chunks.length });
          return absent;
        }
        room -= r.log.chunks.length;
        const h = r.log.header;
        return { disk: slot.index, flags: DISK_LOG_FLAG_PRESENT, lineage: h.lineage, kind: LOG_KIND_CODE[h.kind], chunkSize: h.chunkSize, seq: h.seq, size: h.size, chunks: r.log.chunks };
      });
    return { lineage: this.lineage, disks };
  }

  /** Before the first write to disk `index`'s image: its old log goes, durably. */
  forget(index: number): void {
    const slot = this.slots.find((s) => s.index === index);
    if (slot?.log) localSync(`disk ${index}: deleting the activity log of its image`, () => slot.log?.remove());
  }

  /** Writable disks the primary did not replicate: their logs go. */
  forgetUnreplicated(): void {
    for (const s of this.slots) if (!this.disks.replicated.has(s.index)) this.forget(s.index);
  }

  /**
   * Checkpoint `n` is applied: maybe start a sync of the replicated images
   * (one at a time, at most every syncIntervalMs), after which `tell(n)`
   * sends DISK_SYNCED. Returns at once; the sync runs off the event loop.
   */
  afterCheckpoint(n: number, tell: (n: number) => Promise<void>): void {
    const replicated = this.disks.replicated;
    if (this.tookOver || this.syncing || replicated.size === 0) return;
    const now = this.now();
    if (this.lastSync !== undefined && now - this.lastSync < (this.opts.syncIntervalMs ?? DEFAULT_DISK_SYNC_INTERVAL_MS)) return;
    this.lastSync = now;
    const covering = this.disks.takeTouchedChunks();
    this.merge(covering);
    const slots = this.slots.filter((s) => replicated.has(s.index));
    this.syncing = (async () => {
      await Promise.all(slots.map((s) => (s.sync ? s.sync() : Promise.resolve(s.raw.flush?.()))));
      if (this.tookOver) return;
      // Only what this sync covered is durable now; writes since stay unsynced.
      for (const [index, chunks] of covering) for (const c of chunks) this.unsynced.get(index)?.delete(c);
      if (!this.replicaWritten) {
        for (const s of slots) s.log?.replace({ lineage: this.lineage, kind: "replica", seq: 0, size: s.raw.byteLength, chunkSize: DEFAULT_HASH_CHUNK_BYTES }, [], false);
        this.replicaWritten = true;
      }
      this.syncs++;
      await tell(n);
    })()
      .catch((err: unknown) => this.opts.log("syncing the disk images failed: the primary is not told (its log keeps every chunk)", { checkpoint: n, error: (err as Error).message }))
      .finally(() => (this.syncing = undefined));
  }

  /** The sync in flight, if any (tests). */
  get syncInFlight(): Promise<void> | undefined {
    return this.syncing;
  }

  private merge(chunks: Map<number, Set<number>>): void {
    for (const [index, set] of chunks) {
      let u = this.unsynced.get(index);
      if (!u) this.unsynced.set(index, (u = new Set()));
      for (const c of set) u.add(c);
    }
  }

  /**
   * Takeover from checkpoint `checkpoint`, before the SVM's overlay is
   * committed: each log {survivor, checkpoint, overlay + unsynced chunks},
   * marking from here on. A log that cannot be written is deleted (never
   * left claiming more than it knows); the takeover goes on.
   */
  takeOver(checkpoint: number, overlays: ReadonlyMap<number, readonly number[]>): void {
    this.tookOver = true;
    this.merge(this.disks.takeTouchedChunks());
    for (const s of this.slots) {
      const overlay = overlays.get(s.index);
      if (overlay === undefined || !s.log) continue;
      const chunks = [...new Set([...overlay, ...(this.unsynced.get(s.index) ?? [])])].sort((a, b) => a - b);
      try {
        s.log.replace({ lineage: this.lineage, kind: "survivor", seq: checkpoint, size: s.raw.byteLength, chunkSize: DEFAULT_HASH_CHUNK_BYTES }, chunks, true);
        this.opts.log("activity log of the survivor in place", { disk: s.index, checkpoint, chunks: chunks.length });
      } catch (err) {
        this.opts.log("the survivor's activity log could not be written: deleting it (a later re-protection hashes this disk)", { disk: s.index, error: (err as Error).message });
        try {
          s.log.remove();
        } catch (e) {
          this.opts.log("the activity log could not be deleted either: delete it by hand before protecting this VM again", { disk: s.index, path: `${s.log.imagePath}.colo-al`, error: (e as Error).message });
        }
      }
    }
  }
}
