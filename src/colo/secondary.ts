/**
 * The secondary side of a replication session (COLO-PROTOCOL.md §4-§7).
 *
 * receiveInitial(): ENGINE_COMPAT (the primary's engine, checked against
 * this one's before anything else), REPLICATION_MODE, the disks' DISK_INFO
 * (answered with DISK_WANT) and copied chunks, the memory image, the writes
 * held during it and DISK_CHECKPOINT, up to checkpoint 0's CHECKPOINT_END.
 * Then run():
 *
 * - Remus mode: the SVM stays paused and only holds the last checkpoint:
 *   its pages are applied to RAM at each CHECKPOINT_END, its device state
 *   is kept and loaded once, at a takeover (a qemu load starts a new QEMU
 *   process); no dirty list is computed (the SVM has not run).
 * - Compare mode: the SVM runs on the input the primary mirrors to it
 *   (NET_FRAME, its TCP acks rewritten into the SVM's sequence space) and
 *   its output goes back to the primary's comparator (never to the LAN);
 *   its disk writes go to the SVM overlay of SecondaryDisk.
 *
 * Each checkpoint: NEW -> pause the SVM -> SVM_SUSPENDED and its dirty list
 * -> buffer the whole checkpoint, apply nothing until CHECKPOINT_END (a half
 * checkpoint is discarded) -> apply memory, state, disk (PVM writes up to
 * DISK_CHECKPOINT in, SVM writes dropped), reset the TCP rewriter ->
 * SVM_READY -> resume the SVM (compare) -> SVM_RESUMED.
 *
 * Primary lost (I/O error, silence past the timeout, a stream that breaks
 * the format or the protocol): take over from the last complete checkpoint
 * (Remus) or from the SVM's own state, whose released output always
 * matched the PVM's (compare): disks commit the SVM's writes and drop
 * pending PVM writes, the TAP joins the LAN (frames still pass the rewriter
 * for connections opened since the last checkpoint), the MAC is announced.
 * A failure of this side's own engine, VM or disk (the operations marked
 * with local-failure.ts) is not the primary's loss: it steps down. What
 * happens at the end: secondary-failover.ts.
 */
import type { Duplex } from "node:stream";
import type { Engine } from "../engine/engine.js";
import { machineHeader, PageBuffer, StreamWriter, writableSink, type ReplicationModeName, type StreamReader, type StreamRecord, type TranslationEntry } from "../state/index.js";
import { checkEngineCompat, receiveMachine } from "../state/machine-transfer.js";
import { HeartbeatSender, INITIAL_SYNC_SILENCE_MS, SilenceWatchdog, WriteLock } from "./heartbeat.js";
import { TranslationChain } from "./net/link-translation.js";
import { RecentTcpOutput } from "./net/recent-output.js";
import { ResponseTimer } from "./net/response-time.js";
import { TcpRewriter } from "./net/tcp-rewriter.js";
import { ReplicationStats } from "./replication-stats.js";
import { monotonicMs } from "../sys/clock.js";
import type { ArbiterOptions } from "./lease.js";
import { local, localEngine, localSync, LocalFailure } from "./local-failure.js";
import { SecondaryDisks, type SecondaryDiskSlot } from "./secondary-disks.js";
import { SecondaryFailover, type SessionEnd } from "./secondary-failover.js";
import { SecondaryDiskLogs } from "./secondary-disk-logs.js";
import { DEFAULT_HASH_CHUNK_BYTES } from "./disk/image-hash.js";

export type { SecondaryDiskSlot } from "./secondary-disks.js";

export interface SecondaryVm {
  readonly engine: Engine;
  readonly disks: readonly SecondaryDiskSlot[];
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Compare mode: the SVM's output frames (false: keep them off the TAP). */
  setOutputFilter(filter: ((frame: Uint8Array) => boolean) | undefined): void;
  setInputFilter(filter: ((frame: Uint8Array) => Uint8Array | undefined) | undefined): void;
  /** After a takeover: the TCP rewriter at the TAP, outermost and for good (it stays under a later session as its primary). */
  setLinkTranslation(t: { toGuest(frame: Uint8Array): Uint8Array; toLan(frame: Uint8Array): Uint8Array } | undefined): void;
  deliverInput(frame: Uint8Array): void;
  sendOutput(frame: Uint8Array): void;
  /** Failover: join the LAN, run, announce. */
  takeOver(): Promise<void>;
  /** This copy is not needed (the primary ended replication in order) or may not be used (stepped down): the daemon destroys it and exits. */
  discard(reason: string): Promise<void>;
  /** This side cannot go on (its fence could not pause the VM): the daemon destroys the VM and exits with 1. */
  end(reason: string): Promise<void>;
}

/** The primary's orderly END: not a failure, no takeover. */
const ORDERLY_END = "the primary ended replication";

export interface SecondaryOptions {
  timeoutMs: number;
  heartbeatMs: number;
  /** Take over only with the arbiter's lease (lease.ts); without one, a lost link makes both sides run. */
  arbiter?: ArbiterOptions;
  log: (msg: string, fields?: Record<string, unknown>) => void;
  /** Per disk: SVM overlay + pending PVM bytes past which a checkpoint is asked for; default DEFAULT_BACKLOG_LIMIT_BYTES (256 MiB). */
  diskBacklogLimitBytes?: number;
  /** fdatasync the replicated images (then DISK_SYNCED) at most this often; default DEFAULT_DISK_SYNC_INTERVAL_MS (1 s). */
  diskSyncIntervalMs?: number;
}

export class SecondaryReplicator {
  readonly stats: ReplicationStats;
  private readonly writer: StreamWriter;
  private finished = false;
  private readonly pending: PageBuffer;
  private readonly lock = new WriteLock();
  private heartbeat: HeartbeatSender | undefined;
  /** Checkpoints applied (checkpoint 0 = the initial sync). */
  applied = 0;
  private midCheckpoint = false;
  /**
   * Remus: the last complete checkpoint's engine state, not loaded yet, and
   * every page applied since the engine last loaded one. The SVM does not
   * run until a takeover, so its device state is loaded then, once (a qemu
   * engine loads into a new QEMU process each time: ~120-300 ms here).
   */
  private deferred: { state: Uint8Array; changed: Set<number> } | undefined;
  mode: ReplicationModeName = "remus";
  private readonly disks: SecondaryDisks;
  private readonly diskLogs: SecondaryDiskLogs;
  readonly rewriter = new TcpRewriter();
  /** Compare mode: the SVM's TCP output since its state last changed, sent again at a takeover (recent-output.ts). */
  private readonly recentOutput = new RecentTcpOutput();
  /** Compare mode: the SVM's response times (status `proxy.responseMs`; net/response-time.ts). */
  private readonly response = new ResponseTimer();
  /** The primary's link translations (it survived a failover; LINK_TRANSLATION), outermost first: a takeover keeps them above its own. */
  private inheritedLayers: TcpRewriter[] = [];
  /** Frames: mirrored in, SVM output sent to the primary. */
  private framesIn = 0;
  private framesOut = 0;
  /** CHECKPOINT_REQUESTs sent (a disk's backlog passed its limit). */
  private checkpointRequests = 0;
  private readonly watchdog: SilenceWatchdog;
  private readonly failover: SecondaryFailover;

  constructor(
    private readonly vm: SecondaryVm,
    /** The replication connection (TLS in production): records from the primary come through `reader`, ours go here. */
    private readonly socket: Duplex,
    private readonly reader: StreamReader,
    peer: string,
    private readonly opts: SecondaryOptions,
  ) {
    this.stats = new ReplicationStats("secondary", peer);
    this.writer = new StreamWriter(writableSink(socket, { coalesce: true }), { machine: machineHeader(vm.engine.id, vm.engine.memoryBytes), channel: "back-channel" });
    this.pending = new PageBuffer(vm.engine.pageCount);
    // Until checkpoint 0 the primary may be hashing its disks: a longer bound, then the peer timeout.
    this.watchdog = new SilenceWatchdog(
      () => (this.applied > 0 ? opts.timeoutMs : Math.max(opts.timeoutMs, INITIAL_SYNC_SILENCE_MS)),
      (ms) => socket.destroy(new Error(`no word from the primary for ${ms} ms`)),
    );
    socket.on("data", () => {
      this.stats.heard();
      this.watchdog.heard();
    });
    // Whoever destroys the socket with a reason (watchdog, heartbeat, a failed send) names the real cause;
    // the loop then only sees "the destination is closed".
    socket.once("error", (err: Error) => {
      this.socketError ??= err;
    });
    this.disks = new SecondaryDisks(vm.disks, {
      backlogLimitBytes: opts.diskBacklogLimitBytes,
      onBacklog: (disk) => this.requestCheckpoint(disk),
      log: (msg, fields) => opts.log(msg, fields),
    });
    this.diskLogs = new SecondaryDiskLogs(vm.disks, this.disks, { log: (msg, fields) => opts.log(msg, fields), ...(opts.diskSyncIntervalMs !== undefined ? { syncIntervalMs: opts.diskSyncIntervalMs } : {}) });
    // DISK_LOG is the back channel's first record, written at once (before any heartbeat can be): the primary waits for it.
    this.lock.run(() => this.writer.writeDiskLog(this.diskLogs.report())).catch((err: unknown) => socket.destroy(err as Error));
    this.failover = new SecondaryFailover({
      vm,
      stats: this.stats,
      rewriter: this.rewriter,
      inheritedLayers: () => this.inheritedLayers,
      arbiter: opts.arbiter,
      log: (msg, fields) => opts.log(msg, fields),
      failoverDisks: () => {
        // The survivor's logs first (overlay chunks, marking from here on), then the overlay's commit.
        this.diskLogs.takeOver(this.applied - 1, this.disks.overlayChunks(DEFAULT_HASH_CHUNK_BYTES));
        return this.disks.failover();
      },
      where: () => ({ mode: this.mode, checkpoint: this.applied - 1 }),
      loadDeferred: () => this.loadDeferred(),
      recentOutput: () => this.recentOutput.take(),
    });
  }

  /** The first error the replication socket was destroyed with. */
  private socketError: Error | undefined;

  /**
   * Everything up to checkpoint 0's CHECKPOINT_END (the VM is paused, its
   * engine started paused). Throws on any problem: nothing runs then.
   */
  async receiveInitial(): Promise<void> {
    try {
      await this.receiveCheckpoint0();
    } catch (err) {
      this.watchdog.stop(); // nothing runs: no peer to watch
      throw err;
    }
  }

  private async receiveCheckpoint0(): Promise<void> {
    // Before the memory image: mode, disk hashes, copied chunks, early writes.
    for (;;) {
      const r = await this.nextRecord("before the memory image");
      if (r.kind === "memory-stream") break;
      // The primary sends it first: an engine that cannot load its state is refused before any disk is hashed or copied.
      if (r.kind === "engine-compat") checkEngineCompat(this.vm.engine, r.compat, r.offset);
      else if (r.kind === "replication-mode") {
        this.mode = r.mode.mode;
        this.stats.replication = this.mode;
      } else if (r.kind === "link-translation") {
        this.inheritedLayers = TranslationChain.restoreLayers(r.layers.filter((l) => l.length > 0));
      } else if (r.kind === "disk-info") await this.answerDiskInfo(r);
      else if (r.kind === "disk-plan") await this.answerDiskPlan(r);
      else if (r.kind === "disk-write") this.diskWrite(r);
      else if (r.kind !== "heartbeat" && r.kind !== "skipped") throw new Error(`unexpected ${r.kind} before the memory image`);
    }
    const m = await receiveMachine(this.vm.engine, this.reader);
    if (m.closedBy !== "checkpoint") throw new Error("the primary sent a migration, not a replication start (no checkpoint 0)");
    await this.finishCheckpoint("checkpoint 0");
    this.diskLogs.forgetUnreplicated();
  }

  private async nextRecord(where: string): Promise<StreamRecord> {
    const r = await this.reader.next();
    if (!r) throw new Error(`the primary closed the stream ${where}`);
    return r;
  }

  private async answerDiskInfo(r: Extract<StreamRecord, { kind: "disk-info" }>): Promise<void> {
    this.diskLogs.forget(r.info.disk);
    const chunks = await this.disks.compare(r.info);
    await this.lock.run(() => this.writer.writeDiskWant({ disk: r.info.disk, chunks }));
  }

  /** DISK_PLAN: a DISK_INFO whose comparison the activity logs did; answered with DISK_WANT of exactly its chunks. */
  private async answerDiskPlan(r: Extract<StreamRecord, { kind: "disk-plan" }>): Promise<void> {
    this.diskLogs.forget(r.plan.disk);
    const chunks = this.disks.adopt(r.plan);
    await this.lock.run(() => this.writer.writeDiskWant({ disk: r.plan.disk, chunks }));
  }

  /** Checkpoint `n` is applied: maybe the images are synced (off the event loop), then the primary hears which checkpoint they hold durably. */
  private diskSynced(n: number): void {
    // A DISK_SYNCED that cannot be written any more (the session ended) is not missed: the primary's log keeps every chunk.
    this.diskLogs.afterCheckpoint(n, (synced) => (this.finished ? Promise.resolve() : this.lock.run(() => this.writer.writeDiskSynced({ checkpoint: synced })).catch(() => undefined)));
  }

  private diskWrite(r: Extract<StreamRecord, { kind: "disk-write" }>): void {
    this.disks.write(r.write);
  }

  /** After a memory CHECKPOINT: disk records, then CHECKPOINT_END; applies the disks' part. */
  private async finishCheckpoint(what: string): Promise<{ diskBytes: number }> {
    const covers = new Map<number, number>();
    let layers: TranslationEntry[][] | undefined;
    for (;;) {
      const r = await this.nextRecord(`inside ${what}`);
      if (r.kind === "disk-write") this.diskWrite(r);
      else if (r.kind === "disk-checkpoint") covers.set(r.checkpoint.disk, r.checkpoint.uptoSeq);
      else if (r.kind === "checkpoint-end") break;
      else if (r.kind === "link-translation") layers = r.layers;
      else if (r.kind !== "skipped" && r.kind !== "emulator-context") throw new Error(`unexpected ${r.kind} inside ${what}`);
    }
    // The primary's refreshed translations, applied with the checkpoint (an empty layer: none left).
    if (layers) this.inheritedLayers = TranslationChain.restoreLayers(layers.filter((l) => l.length > 0));
    return { diskBytes: this.disks.checkpoint(covers, what) };
  }

  /**
   * Runs the session after checkpoint 0 was applied (the VM holds it,
   * paused). Resolves with the reason when the session is over: this VM has
   * taken over, or (stepped down, discarded) the daemon is ending it.
   */
  async run(): Promise<string> {
    this.applied = 1;
    this.watchdog.heard();
    this.vm.engine.takeDirtyPages(); // the SVM's own writes count from here
    let end: SessionEnd;
    try {
      await this.lock.run(() => this.writer.writeCheckpointState("SVM_READY"));
      this.diskSynced(0);
      if (this.mode === "compare") {
        this.vm.setOutputFilter((frame) => {
          this.recentOutput.record(frame);
          this.response.output(frame, monotonicMs());
          this.sendToPrimary(frame);
          return false;
        });
        await local("resuming the SVM", () => this.vm.resume());
      }
      this.heartbeat = new HeartbeatSender(this.writer, this.lock, this.opts.heartbeatMs, () => !this.finished, (err) =>
        this.socket.destroy(new Error(`heartbeat: ${err.message}`)),
      );
      const reason = await this.loop();
      end = { kind: reason === ORDERLY_END ? "orderly" : "primary-lost", reason };
    } catch (err) {
      const cause = this.socketError;
      // This side's own engine, VM or disk failed: not the primary's loss, whatever happened to the connection.
      if (err instanceof LocalFailure) end = { kind: "local", failure: err };
      else end = { kind: "primary-lost", reason: cause !== undefined && cause !== err ? `${cause.message} (then: ${(err as Error).message})` : (err as Error).message };
    }
    if (this.pending.size > 0 || this.midCheckpoint) {
      this.stats.discardedCheckpoints++;
    }
    this.pending.clear();
    this.finished = true;
    this.watchdog.stop();
    this.heartbeat?.stop();
    // Closed in every case: after a local failure the primary sees its secondary lost and runs on unprotected.
    this.socket.destroy();
    return this.failover.end(end);
  }

  /** CHECKPOINT_REQUEST on the back channel (called from inside a disk write: only queues the record). */
  private requestCheckpoint(disk: number): void {
    if (this.finished) return;
    this.checkpointRequests++;
    this.lock.run(() => this.writer.writeCheckpointRequest({ reason: "disk-backlog", disk })).catch((err: unknown) => this.socket.destroy(err as Error));
  }

  private sendToPrimary(frame: Uint8Array): void {
    if (this.finished) return;
    this.framesOut++;
    const out = this.rewriter.fromSecondaryVm(frame);
    this.lock.run(() => this.writer.writeNetFrame({ direction: "secondary-output", frame: out })).catch((err: unknown) => this.socket.destroy(err as Error));
  }

  private async loop(): Promise<string> {
    // Every call of this side's engine here is a local operation (local-failure.ts).
    const engine = localEngine(this.vm.engine);
    let state: Uint8Array | undefined;
    let inCheckpoint = false;
    for (;;) {
      const r = await this.reader.next();
      if (!r) return "the primary closed the replication stream";
      switch (r.kind) {
        case "net-frame":
          this.framesIn++;
          {
            const frame = this.rewriter.toSecondaryVm(r.net.frame);
            localSync("delivering input to the SVM", () => this.vm.deliverInput(frame));
            this.response.input(frame, monotonicMs());
            if (this.mode === "compare") this.recentOutput.input(frame);
          }
          break;
        case "disk-write":
          this.diskWrite(r);
          break;
        case "checkpoint-state":
          if (r.control !== "NEW") throw new Error(`unexpected ${r.control} from the primary`);
          // Compare: stop the SVM; Remus: it is paused already. Its dirty list is what it wrote since the last checkpoint
          // (Remus: nothing, it has not run; no compare of all RAM for it).
          await local("pausing the SVM", () => this.vm.pause());
          await this.lock.run(async () => {
            await this.writer.writeCheckpointState("SVM_SUSPENDED");
            await this.writer.writeMemoryStream();
            const dirty = this.mode === "compare" ? engine.takeDirtyPages() : new Uint32Array(0);
            if (dirty.length > 0) await this.writer.writeDirtyPfnList(dirty);
            await this.writer.writeCheckpoint();
          });
          this.heartbeat?.wrote();
          inCheckpoint = true;
          this.midCheckpoint = true;
          state = undefined;
          this.pending.clear();
          break;
        case "memory-stream":
        case "precopy-round":
        case "skipped":
        case "heartbeat":
          break;
        case "page-data":
          if (!inCheckpoint) throw new Error("pages outside a checkpoint");
          this.pending.add(r.pages);
          break;
        case "engine-state":
          if (r.state.engineId !== engine.id || r.state.formatVersion !== engine.stateFormatVersion) {
            throw new Error(`engine state ${r.state.engineId}/${r.state.formatVersion} does not fit this VM`);
          }
          state = Uint8Array.from(r.state.blob);
          break;
        case "checkpoint": {
          if (!inCheckpoint || !state) throw new Error("a memory CHECKPOINT without a complete checkpoint");
          const n = this.applied;
          // The disk records and CHECKPOINT_END; nothing of this checkpoint is applied before it.
          const { diskBytes } = await this.finishCheckpoint(`checkpoint ${n}`);
          const pages = this.pending.size;
          const changed = this.pending.pfns();
          const t0 = monotonicMs();
          this.pending.applyTo(engine.ram());
          const t1 = monotonicMs();
          // Only these pages changed: the engine keeps its translations of the rest (emu: the JIT stays warm).
          // The primary waits for SVM_READY meanwhile: the time our engine takes is not its silence
          // (a qemu secondary may wait for its standby QEMU to finish starting).
          const loaded = state;
          if (this.mode === "compare") await this.watchdog.excusing(() => engine.loadState(loaded, { changedPages: changed }));
          else this.defer(loaded, changed);
          const phasesMs = { applyPages: Math.round((t1 - t0) * 10) / 10, loadState: Math.round((monotonicMs() - t1) * 10) / 10 };
          this.pending.clear();
          this.rewriter.reset();
          this.recentOutput.clear();
          inCheckpoint = false;
          this.midCheckpoint = false;
          this.applied++;
          this.stats.recordCheckpoint({ checkpoint: n, pauseMs: 0, pages, bytes: diskBytes, phasesMs });
          await this.lock.run(async () => {
            await this.writer.writeCheckpointState("SVM_READY");
            // The SVM's own writes count from here: reset the tracker (a compare of all RAM on emu)
            // after SVM_READY is on its way, so the primary resumes meanwhile; the SVM is still paused.
            // Remus: the applied pages are what the tracker's copy must hold, page by page (defer()).
            if (this.mode === "compare") {
              engine.takeDirtyPages();
              await local(`resuming the SVM after checkpoint ${n}`, () => this.vm.resume());
            }
            await this.writer.writeCheckpointState("SVM_RESUMED");
          });
          this.diskSynced(n);
          this.heartbeat?.wrote();
          break;
        }
        case "end":
          return ORDERLY_END;
        default:
          throw new Error(`unexpected ${r.kind} record from the primary`);
      }
    }
  }

  /** Remus: keep the checkpoint's state for a takeover; the tracker's copy takes the applied pages. */
  private defer(state: Uint8Array, changed: Uint32Array): void {
    localSync("keeping the checkpoint's pages", () => this.vm.engine.pagesCopied(changed));
    const all = this.deferred?.changed ?? new Set<number>();
    for (const pfn of changed) all.add(pfn);
    this.deferred = { state, changed: all };
  }

  /** Before a takeover: the last complete checkpoint's device state into the engine (Remus defers it). */
  private async loadDeferred(): Promise<void> {
    const d = this.deferred;
    if (d === undefined) return;
    this.deferred = undefined;
    const started = monotonicMs();
    await this.vm.engine.loadState(d.state, { changedPages: Uint32Array.from(d.changed) });
    this.opts.log("loaded the last checkpoint's device state for the takeover", { pages: d.changed.size, ms: Math.round((monotonicMs() - started) * 10) / 10 });
  }

  /** A new session of this VM takes over the lease (same holder): stop renewing from this one. */
  stopLease(): Promise<void> {
    return this.failover.stopLease();
  }

  /** The VM is gone: give its lease back (a later session may take it). */
  releaseLease(): Promise<void> {
    return this.failover.releaseLease();
  }

  /** Operator failover: stop listening to the primary and take over now. */
  takeOverNow(reason: string): void {
    this.socket.destroy(new Error(reason));
  }

  get done(): boolean {
    return this.finished;
  }

  /** SHA-256 of each replicated disk's base: the PVM's disk as of the last applied checkpoint (or, after failover, the survivor's disk). */
  diskHashes(): Promise<{ disk: number; sha256: string }[]> {
    return this.disks.hashes();
  }

  details(): Record<string, unknown> {
    return {
      framesIn: this.framesIn,
      framesOut: this.framesOut,
      checkpointRequests: this.checkpointRequests,
      diskSyncs: this.diskLogs.syncs,
      rewriter: this.rewriter.stats(),
      ...(this.mode === "compare" ? { responseMs: this.response.summary() } : {}),
      disks: this.disks.stats(),
    };
  }
}
