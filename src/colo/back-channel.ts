/**
 * The primary's reader of the back channel (secondary → primary). It reads
 * continuously: the SVM's output frames (compare mode) go to `onFrame` and
 * the secondary's checkpoint requests (CHECKPOINT_REQUEST) to
 * `onCheckpointRequest` the moment they arrive, DISK_SYNCED to
 * `onDiskSynced`; control messages, dirty lists and disk answers queue for
 * the checkpoint code, which takes them in order with next(). The first
 * record is set aside: a revision-8 secondary's DISK_LOG (firstRecord()),
 * or anything else from an older one.
 */
import type { Readable } from "node:stream";
import { StreamReader, unionSortedPfns, type CheckpointRequest, type DiskLogReport, type StreamRecord } from "../state/index.js";

export class BackChannel {
  private readonly reader: StreamReader;
  private readonly queue: StreamRecord[] = [];
  private waiter: { resolve: (r: StreamRecord) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;
  /** The first record came: its DISK_LOG, or undefined (an older secondary's first record was something else). */
  private first: { report: DiskLogReport | undefined } | undefined;
  private firstWaiters: ((r: { report: DiskLogReport | undefined } | Error) => void)[] = [];

  constructor(
    socket: Readable,
    private readonly onFrame: (frame: Uint8Array) => void,
    private readonly onCheckpointRequest: (request: CheckpointRequest) => void,
    /** DISK_SYNCED: the secondary's images hold this checkpoint durably. */
    private readonly onDiskSynced: (checkpoint: number) => void = () => undefined,
  ) {
    this.reader = new StreamReader(socket, { channel: "back-channel" });
    void this.pump();
  }

  private async pump(): Promise<void> {
    try {
      for (;;) {
        const r = await this.reader.next();
        if (!r) throw new Error("the secondary closed the replication connection");
        if (r.kind === "end") throw new Error("the secondary ended its stream");
        if (this.first === undefined && r.kind !== "machine-header") {
          this.first = { report: r.kind === "disk-log" ? r.report : undefined };
          for (const w of this.firstWaiters.splice(0)) w(this.first);
          if (r.kind === "disk-log") continue;
        }
        if (r.kind === "skipped" || r.kind === "machine-header" || r.kind === "heartbeat") continue;
        if (r.kind === "disk-synced") {
          this.onDiskSynced(r.synced.checkpoint);
          continue;
        }
        if (r.kind === "net-frame") {
          this.onFrame(r.net.frame);
          continue;
        }
        if (r.kind === "checkpoint-request") {
          this.onCheckpointRequest(r.request);
          continue;
        }
        const w = this.waiter;
        if (w) {
          this.waiter = undefined;
          w.resolve(r);
        } else {
          this.queue.push(r);
        }
      }
    } catch (err) {
      this.failure = err as Error;
      for (const fw of this.firstWaiters.splice(0)) fw(this.failure);
      const w = this.waiter;
      this.waiter = undefined;
      w?.reject(this.failure);
    }
  }

  /**
   * The secondary's DISK_LOG, once its first record came; undefined when
   * that was something else (a secondary of revision 7) or nothing came
   * within `waitMs` (a secondary of revision 7 says nothing before its
   * first DISK_WANT). Throws when the channel failed first.
   */
  firstRecord(waitMs: number): Promise<DiskLogReport | undefined> {
    if (this.first) return Promise.resolve(this.first.report);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => resolve(undefined), waitMs);
      this.firstWaiters.push((r) => {
        clearTimeout(timer);
        if (r instanceof Error) reject(r);
        else resolve(r.report);
      });
    });
  }

  /** The next control record (not a frame, not a heartbeat); throws when the channel failed or ended. */
  next(): Promise<StreamRecord> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.failure) return Promise.reject(this.failure);
    if (this.waiter) return Promise.reject(new Error("internal: two readers of the back channel"));
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  async expectState(control: string): Promise<void> {
    const r = await this.next();
    if (r.kind !== "checkpoint-state" || r.control !== control) throw new Error(`expected ${control} from the secondary, got ${r.kind}${r.kind === "checkpoint-state" ? ` ${r.control}` : ""}`);
  }

  /** After SVM_SUSPENDED: the SVM's dirty pages (its DIRTY_PFN_LISTs, merged), up to the CHECKPOINT that closes them. */
  async svmDirtyList(): Promise<Uint32Array> {
    let svmDirty: Uint32Array = new Uint32Array(0);
    for (;;) {
      const r = await this.next();
      if (r.kind === "memory-stream") continue;
      if (r.kind === "dirty-pfn-list") svmDirty = unionSortedPfns(svmDirty, r.pfns);
      else if (r.kind === "checkpoint") return svmDirty;
      else throw new Error(`unexpected ${r.kind} in the secondary's dirty list`);
    }
  }
}
