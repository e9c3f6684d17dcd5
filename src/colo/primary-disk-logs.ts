/**
 * The primary's activity logs in a replication session (docs/specs/
 * activity-log.md; docs/operations.md "Re-protection"):
 *
 * - At the start, with the secondary's DISK_LOG: per disk, whether the two
 *   images' logs prove which chunks can differ (disk/log-plan.ts: a
 *   DISK_PLAN instead of DISK_INFO, no hashing), unless the operator asked
 *   for a full disk sync. A secondary without DISK_LOG (revision 7)
 *   changes its image without a log: this side's logs are deleted then, so
 *   that no stale log of that image can ever be matched with one of ours.
 * - During the session: the chunks written in each checkpoint epoch (the
 *   epoch changes at each checkpoint's pause, the guest stopped), in
 *   memory. When the secondary says its images hold checkpoint N durably
 *   (DISK_SYNCED), the log of each image MAY be replaced by {this
 *   session's lineage, primary, seq N, chunks written since N's pause},
 *   once this side's image is fdatasync'ed too (both images then hold the
 *   state at N durably). Lazily: the first time at once (the session's own
 *   log replaces what the image had), then at most every
 *   `rewriteIntervalMs` (5 s), sooner when the set shrank a lot; hot chunks
 *   cost one log sync per interval, not one per checkpoint. A superset is
 *   always safe.
 * - After the session (the secondary lost, a stop): nothing more is
 *   replaced; the log in place keeps marking every write (it stays valid:
 *   its bits only grow).
 */
import type { BlockBackend } from "../engine/engine.js";
import type { DiskLogEntry, DiskLogReport } from "../state/index.js";
import type { LogKind } from "./disk/activity-log.js";
import { DEFAULT_HASH_CHUNK_BYTES } from "./disk/image-hash.js";
import type { DiskLog } from "./disk/image-log.js";
import { planFromLogs, type PeerLog } from "./disk/log-plan.js";
import { monotonicMs } from "../sys/clock.js";

/** Replace a log at most this often (ms): a hot chunk costs one log sync per interval. */
export const DEFAULT_LOG_REWRITE_INTERVAL_MS = 5000;
/** Sooner than the interval, but not sooner than this, when the set shrank a lot. */
const SHRUNK_REWRITE_MS = 1000;

export interface LoggedDisk {
  readonly index: number;
  readonly local: BlockBackend;
  /** The image's activity log (absent: this disk keeps none). */
  readonly log?: DiskLog;
  /** fdatasync the image off the event loop (absent: `local.flush()`). */
  sync?(): Promise<void>;
}

export interface PrimaryDiskLogOptions {
  /** The operator's --full-disk-sync: hash every disk, whatever the logs say. */
  fullDiskSync: boolean;
  log: (msg: string, fields?: Record<string, unknown>) => void;
  rewriteIntervalMs?: number;
  now?: () => number;
}

const KIND_OF_CODE: ReadonlyMap<number, LogKind> = new Map([
  [1, "primary"],
  [2, "replica"],
  [3, "survivor"],
]);

function peerLogOf(e: DiskLogEntry): PeerLog {
  return { flags: e.flags, lineage: e.lineage, kind: KIND_OF_CODE.get(e.kind), seq: e.seq, chunkSize: e.chunkSize, size: e.size, chunks: e.chunks };
}

export class PrimaryDiskLogs {
  private peer: DiskLogReport | undefined;
  /** The epoch writes belong to now: -1 before checkpoint 0's pause, then the last checkpoint paused. */
  private epoch = -1;
  /** Per disk, per epoch: the chunks written. */
  private readonly written = new Map<number, Map<number, Set<number>>>();
  private lastRewrite: number | undefined;
  /** The checkpoint the logs were last replaced at. */
  private loggedSeq: number | undefined;
  private ended = false;
  /** A replacement in flight (its image syncs run off the event loop). */
  private rewriting: Promise<void> | undefined;
  private readonly now: () => number;
  private readonly interval: number;
  /** Logs replaced in this session (status). */
  rewrites = 0;

  constructor(
    private readonly disks: readonly LoggedDisk[],
    private readonly opts: PrimaryDiskLogOptions,
  ) {
    this.now = opts.now ?? monotonicMs;
    this.interval = opts.rewriteIntervalMs ?? DEFAULT_LOG_REWRITE_INTERVAL_MS;
    for (const d of disks) this.written.set(d.index, new Map());
  }

  /**
   * Whether a disk's log here could prove a plan (some disk has a log): only
   * then is the secondary's DISK_LOG worth waiting for before any DISK_INFO
   * (and a revision-7 secondary must be recognised before it copies, so
   * that this side's logs are deleted first).
   */
  mayPlan(): boolean {
    return this.disks.some((d) => d.log !== undefined && d.log.read().kind !== "none");
  }

  /** The secondary's DISK_LOG, or undefined: it sent none (revision 7) before this side gave up waiting. */
  begin(peer: DiskLogReport | undefined): void {
    this.peer = peer;
    if (peer !== undefined) return;
    for (const d of this.disks) {
      if (!d.log || d.log.read().kind === "none") continue;
      d.log.remove();
      this.opts.log("the secondary sent no disk log (an older colo changes its image without one): this image's activity log is deleted", { disk: d.index, image: d.log.imagePath });
    }
  }

  /** Disk `index` of `size` octets: the chunks to copy when the logs prove them, else undefined (hash compare). Call once forwarding runs. */
  plan(index: number, size: number): number[] | undefined {
    const disk = this.disks.find((d) => d.index === index);
    if (this.opts.fullDiskSync) {
      this.opts.log("disk sync by hash compare", { disk: index, why: "a full disk sync was asked for" });
      return undefined;
    }
    const mine = disk?.log?.read() ?? { kind: "none" as const };
    if (this.peer === undefined) {
      this.opts.log("disk sync by hash compare", { disk: index, why: mine.kind === "none" ? "this image has no activity log" : "the secondary sent no disk log (an older colo)" });
      return undefined;
    }
    const entry = this.peer.disks.find((e) => e.disk === index);
    const p = planFromLogs(mine, entry ? peerLogOf(entry) : undefined, { size, chunkSize: DEFAULT_HASH_CHUNK_BYTES });
    if (p.kind === "hash") {
      this.opts.log("disk sync by hash compare", { disk: index, why: p.why });
      return undefined;
    }
    this.opts.log("disk sync by activity logs: no hashing", { disk: index, chunks: p.chunks.length, of: Math.ceil(size / DEFAULT_HASH_CHUNK_BYTES), why: p.why });
    return p.chunks;
  }

  /** A write of disk `index` landed (in memory, for the epoch it belongs to). */
  wrote(index: number, offset: number, length: number): void {
    if (this.ended || length <= 0) return;
    const perEpoch = this.written.get(index);
    if (!perEpoch) return;
    let set = perEpoch.get(this.epoch);
    if (!set) perEpoch.set(this.epoch, (set = new Set()));
    const size = DEFAULT_HASH_CHUNK_BYTES;
    for (let c = Math.floor(offset / size); c <= Math.floor((offset + length - 1) / size); c++) set.add(c);
  }

  /** Checkpoint `n`'s pause (the guest is stopped): later writes belong to epoch n. */
  paused(n: number): void {
    this.epoch = n;
  }

  /** The chunks of disk `index` written since checkpoint `n`'s pause, ascending. */
  writtenSince(index: number, n: number): number[] {
    const out = new Set<number>();
    for (const [epoch, set] of this.written.get(index) ?? []) if (epoch >= n) for (const c of set) out.add(c);
    return [...out].sort((a, b) => a - b);
  }

  /** DISK_SYNCED: the secondary's images hold checkpoint `n` durably. Maybe replaces the logs (the module comment); resolves when done. */
  synced(n: number): Promise<void> {
    if (this.ended || this.peer === undefined || n > this.epoch || this.rewriting) return Promise.resolve();
    if (this.loggedSeq !== undefined && n <= this.loggedSeq) return Promise.resolve();
    // Epochs before n are never needed again: later replacements are relative to n or later.
    for (const perEpoch of this.written.values()) for (const epoch of [...perEpoch.keys()]) if (epoch < n) perEpoch.delete(epoch);
    const now = this.now();
    const since = this.lastRewrite === undefined ? Infinity : now - this.lastRewrite;
    const logged = this.disks.filter((d) => d.log !== undefined);
    const shrunk = logged.some((d) => {
      const r = d.log?.read();
      return r?.kind === "ok" && r.log.chunks.length > 2 * this.writtenSince(d.index, n).length + 256;
    });
    if (!(this.lastRewrite === undefined || since >= this.interval || (shrunk && since >= SHRUNK_REWRITE_MS))) return Promise.resolve();
    const lineage = this.peer.lineage;
    const first = this.lastRewrite === undefined;
    this.lastRewrite = now;
    this.rewriting = (async () => {
      // Every write before n's pause (made before this call) is on this side's storage before the log stops naming its chunk.
      await Promise.all(logged.map((d) => (d.sync ? d.sync() : Promise.resolve(d.local.flush?.()))));
      if (this.ended) return;
      // Synchronous from here: no write lands between reading the epochs and the new log (the chunks since n's pause, up to now).
      for (const d of logged) d.log?.replace({ lineage, kind: "primary", seq: n, size: d.local.byteLength, chunkSize: DEFAULT_HASH_CHUNK_BYTES }, this.writtenSince(d.index, n), true);
      if (first && logged.length > 0) this.opts.log("activity logs of this session in place", { checkpoint: n, disks: logged.length });
      this.loggedSeq = n;
      this.rewrites++;
    })()
      .catch((err: unknown) => this.opts.log("replacing the activity logs failed: the old ones stay (a superset)", { checkpoint: n, error: (err as Error).message }))
      .finally(() => (this.rewriting = undefined));
    return this.rewriting;
  }

  /** What `colo status` shows: per disk, the log in place (kind, checkpoint, chunks marked) or none. */
  status(): Record<string, unknown>[] {
    return this.disks.map((d) => {
      const r = d.log?.read() ?? { kind: "none" as const };
      if (r.kind !== "ok") return { disk: d.index, log: r.kind };
      return { disk: d.index, log: r.log.header.kind, checkpoint: r.log.header.seq, chunks: r.log.chunks.length, marking: d.log?.marking ?? false };
    });
  }

  /** The session is over: no more replacements (the logs in place keep marking). */
  stop(): void {
    this.ended = true;
    this.written.clear();
  }
}
