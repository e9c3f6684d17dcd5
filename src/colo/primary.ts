/**
 * The primary side of a replication session (COLO-PROTOCOL.md §4, §6, §7).
 *
 * Start: VM_CONFIG, ENGINE_COMPAT (the secondary refuses an engine that
 * cannot load this one's state there), REPLICATION_MODE, then (with
 * replicated disks) DISK_INFO and the chunks the secondary asks for, then
 * a live migration whose last memory part ends with CHECKPOINT
 * (checkpoint 0; primary-start.ts). Then, whenever the checkpoint policy
 * says so (primary-checkpoint.ts):
 *
 *   NEW -> SVM_SUSPENDED + SVM dirty list (the PVM runs) -> pause PVM ->
 *   copy the union of dirty pages, the engine state, the disks' covers,
 *   the queued input -> resume PVM (its new output held apart) -> from the copies: pages,
 *   engine state, CHECKPOINT, the disk writes held since NEW,
 *   DISK_CHECKPOINT, CHECKPOINT_END, the queued
 *   input frames -> SVM_READY -> release the checkpoint's output ->
 *   SVM_RESUMED
 *
 * Two modes differ only in output commit and policy:
 * - Remus: the SVM stays paused; every PVM frame waits for the next
 *   checkpoint; a checkpoint every `intervalMs`.
 * - Compare (COLO): the SVM runs on mirrored input; PVM frames leave when
 *   the SVM produced the same (CompareOutput); checkpoints on divergence,
 *   timeout, overflow, disk backlog (this side's, or the secondary's, which
 *   it asks for with CHECKPOINT_REQUEST), or the maximum interval.
 *
 * Mirroring stops at NEW: every mirrored frame issued before it is
 * written before it, and the queued input frames re-sent after
 * CHECKPOINT_END are exactly those the checkpointed state has not
 * consumed. The checkpoint holds the write lock from NEW: the PVM's disk
 * writes from then until its pause are held and written inside the
 * checkpoint, before the DISK_CHECKPOINT that covers them; those after its
 * resume, and its mirrored input, wait for the lock: after CHECKPOINT_END.
 *
 * Secondary lost (I/O error, silence past the timeout): held output is
 * released, mirroring and disk forwarding stop, the VM runs on unprotected
 * (with an arbiter only after the solo mark, else fenced). A fence drops
 * all output before it pauses the VM; a fence whose pause fails, or a
 * resume that fails, ends this side (PrimaryVm.end; after a checkpoint the
 * secondary, which holds it, takes over).
 */
import type { Duplex } from "node:stream";
import type { Engine } from "../engine/engine.js";
import { machineHeader, PageStaging, StreamWriter, teeSink, writableSink, type ByteSink, type ReplicationModeName } from "../state/index.js";
import { BackChannel } from "./back-channel.js";
import { CheckpointPolicy, type CheckpointReason } from "./checkpoint-policy.js";
import { CompareOutput, type OutputCommit } from "./compare-output.js";
import { HeartbeatSender, INITIAL_SYNC_SILENCE_MS, SilenceWatchdog, WriteLock } from "./heartbeat.js";
import type { ComparatorOptions, Divergence } from "./net/comparator.js";
import type { CarriedTranslation } from "./net/link-translation.js";
import { RemusOutput } from "./remus-output.js";
import { ReplicationStats } from "./replication-stats.js";
import { DiskForwarder, type ForwardedDisk } from "./disk-forwarder.js";
import { LeaseKeeper, type ArbiterOptions } from "./lease.js";
import { monotonicMs } from "../sys/clock.js";
import { PrimaryFailover } from "./primary-failover.js";
import { PrimaryDiskLogs } from "./primary-disk-logs.js";
import { runCheckpoint, type CheckpointSide, type OperatorCheckpoint, type OperatorWaiter } from "./primary-checkpoint.js";
import { startPrimary, type StartFigures, type StartSide } from "./primary-start.js";
import { InputMirror } from "./primary-mirror.js";
import { LinkTranslationSender } from "./primary-link-translation.js";

export type { OperatorCheckpoint } from "./primary-checkpoint.js";
export { DEFAULT_DISK_LOG_WAIT_MS, type StartFigures } from "./primary-start.js";

export interface PrimaryVm {
  readonly engine: Engine;
  pause(): Promise<void>;
  resume(): Promise<void>;
  setOutputFilter(filter: ((frame: Uint8Array) => boolean) | undefined): void;
  setInputFilter(filter: ((frame: Uint8Array) => Uint8Array | undefined) | undefined): void;
  sendOutput(frame: Uint8Array): void;
  /** The writable disks to replicate (empty: none). */
  readonly disks: readonly ForwardedDisk[];
  /** The translations at the VM's link, if it survived failovers (sent as LINK_TRANSLATION, refreshed per checkpoint). */
  linkTranslation?(): CarriedTranslation | undefined;
  /** This side cannot go on (a fence could not pause the VM, or a resume failed): the daemon destroys the VM and exits with 1. */
  end(reason: string): Promise<void>;
}

export interface CompareOptions extends ComparatorOptions {
  minGapMs: number;
  maxIntervalMs: number;
}

export interface PrimaryOptions {
  mode: ReplicationModeName;
  /** Remus: the checkpoint interval. */
  intervalMs: number;
  /** Compare mode: comparator limits and checkpoint policy. */
  compare?: CompareOptions;
  /** Silence from the secondary longer than this is a loss. */
  timeoutMs: number;
  /** Write a heartbeat when nothing was sent for this long. */
  heartbeatMs: number;
  /** Forwarded disk bytes since the last checkpoint past which a checkpoint is due. */
  diskBacklogBytes?: number;
  log: (msg: string, fields?: Record<string, unknown>) => void;
  /** Test hook: delay inside a checkpoint, after the pages are sent (COLO_TEST_CHECKPOINT_DELAY_MS). */
  midCheckpointDelayMs?: number;
  /** Without an arbiter, a lost link makes both sides run (split brain possible; docs/replication.md). */
  arbiter?: ArbiterOptions;
  /** A plaintext copy of every octet of the forward stream (COLO_CAPTURE_DIR; a sink that never rejects). */
  capture?: ByteSink;
  /** Where a buffer lies in memory (src/sys `bufferAddress`): the staged copy of the PVM's pages keeps RAM's alignment (page-staging.ts). */
  addressOf?: (bytes: Uint8Array) => bigint;
  /** `--full-disk-sync`: compare the disks by hash whatever their activity logs say. */
  fullDiskSync?: boolean;
  /** How long to wait for the secondary's DISK_LOG before hashing; default DEFAULT_DISK_LOG_WAIT_MS. */
  diskLogWaitMs?: number;
  /** Replace the activity logs at most this often; default DEFAULT_LOG_REWRITE_INTERVAL_MS (5 s). */
  diskLogRewriteMs?: number;
}

/** Default disk backlog before a checkpoint is forced: 64 MiB of forwarded writes. */
export const DEFAULT_DISK_BACKLOG_BYTES = 64 * 2 ** 20;
/** How long an operator stop waits to write END behind a checkpoint in flight (under the CLI's 15 s before it kills a daemon). */
export const STOP_END_TIMEOUT_MS = 10_000;
/** How often compare mode looks for held frames past their timeout. */
const EXPIRY_POLL_MS = 50;

export class PrimaryReplicator {
  readonly stats: ReplicationStats;
  readonly output: OutputCommit;
  private readonly compare: CompareOutput | undefined;
  private readonly policy: CheckpointPolicy;
  private readonly writer: StreamWriter;
  private readonly back: BackChannel;
  private stopped = false;
  /** stop() began: no checkpoint starts any more (the END waits for the one in flight). */
  private stopping: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private lost: ((reason: string) => void) | undefined;
  private readonly lock = new WriteLock();
  private heartbeat: HeartbeatSender | undefined;
  private synced = false;
  /** CHECKPOINT_END of checkpoint 0 is (being) sent: the secondary may hold a copy it can take over with. */
  private secondaryMayHoldCopy = false;
  /** What the start (the initial sync up to checkpoint 0) took, once done. */
  started: StartFigures | undefined;
  private checkpointing = false;
  /** The checkpoint running now, settled when it is over (its failure is handled where it starts). */
  private inFlight: Promise<void> | undefined;
  private readonly disks: DiskForwarder;
  private readonly input: InputMirror;
  private readonly link: LinkTranslationSender;
  private readonly diskLogs: PrimaryDiskLogs;
  /** Checkpoint pauses so far (the next checkpoint's number): its epoch starts at its pause. */
  private pauses = 0;
  mirroredFrames = 0;
  private readonly lease: LeaseKeeper | undefined;
  private readonly failover: PrimaryFailover;
  private readonly watchdog: SilenceWatchdog;
  private operatorWaiters: OperatorWaiter[] = [];
  /** The divergence behind the pending checkpoint reason, if the comparator asked (status `recentCheckpoints`). */
  private pendingDivergence: Divergence | undefined;
  /** What the start and each checkpoint (primary-start.ts, primary-checkpoint.ts) need of this session. */
  private readonly side: StartSide & CheckpointSide;

  constructor(
    private readonly vm: PrimaryVm,
    /** The replication connection (TLS in production). */
    private readonly socket: Duplex,
    peer: string,
    private readonly opts: PrimaryOptions,
  ) {
    this.stats = new ReplicationStats("primary", peer, opts.mode);
    // One send per turn of the loop: a burst of mirrored frames and heartbeats leaves together.
    const wire = writableSink(socket, { coalesce: true });
    this.writer = new StreamWriter(opts.capture ? teeSink(wire, opts.capture) : wire, { machine: machineHeader(vm.engine.id, vm.engine.memoryBytes) });
    this.input = new InputMirror({
      vm, writer: this.writer, lock: this.lock, opts,
      counted: (frame) => {
        this.mirroredFrames++;
        if (frame) this.compare?.input(frame);
      },
      stopping: () => this.stopping !== undefined,
      fail: (reason) => this.fail(reason),
    });
    this.link = new LinkTranslationSender(vm, this.writer, (msg, fields) => opts.log(msg, fields));
    if (opts.mode === "compare") {
      const c = opts.compare;
      if (!c) throw new Error("compare mode needs comparator options");
      this.compare = new CompareOutput(c, (f) => this.vm.sendOutput(f), (d) => this.request(d.reason, d));
      this.output = this.compare;
      this.policy = new CheckpointPolicy({ minGapMs: c.minGapMs, maxIntervalMs: c.maxIntervalMs }, monotonicMs());
    } else {
      this.output = new RemusOutput();
      this.policy = new CheckpointPolicy({ minGapMs: 0, maxIntervalMs: opts.intervalMs }, monotonicMs());
    }
    this.stats.reasons = this.policy.counts;
    const a = opts.arbiter;
    this.lease = a ? new LeaseKeeper(a.arbiter, a.vm, a.holder, a.ttlMs, () => this.failover.leaseExpired()) : undefined;
    const lease = this.lease;
    if (lease) this.stats.lease = () => ({ ...lease.status() });
    this.failover = new PrimaryFailover({ vm, stats: this.stats, output: this.output, lease, log: (msg, fields) => opts.log(msg, fields) });
    this.diskLogs = new PrimaryDiskLogs(vm.disks, {
      fullDiskSync: opts.fullDiskSync ?? false,
      log: (msg, fields) => opts.log(msg, fields),
      ...(opts.diskLogRewriteMs !== undefined ? { rewriteIntervalMs: opts.diskLogRewriteMs } : {}),
    });
    this.disks = new DiskForwarder(vm.disks, this.writer, this.lock, opts.diskBacklogBytes ?? DEFAULT_DISK_BACKLOG_BYTES, () => this.request("disk-backlog"), (i, o, l) =>
      this.diskLogs.wrote(i, o, l),
    );
    this.back = new BackChannel(
      socket,
      // Once replication ended nothing is compared: a lost (or fenced-off) secondary's frames release nothing.
      (frame) => {
        if (!this.stopped) this.compare?.secondaryOutput(frame);
      },
      // The secondary's disk backlog (its SVM overlay, which only a checkpoint empties) passed its limit.
      () => this.request("secondary-disk-backlog"),
      (checkpoint) => void this.diskLogs.synced(checkpoint),
    );
    // Until checkpoint 0 no heartbeats flow and the secondary may be hashing its disks: a longer bound.
    this.watchdog = new SilenceWatchdog(
      () => (this.synced ? opts.timeoutMs : Math.max(opts.timeoutMs, INITIAL_SYNC_SILENCE_MS)),
      (ms) => this.fail(`no word from the secondary for ${ms} ms`),
    );
    socket.on("data", () => {
      this.stats.heard();
      this.watchdog.heard();
    });
    socket.on("error", (err) => this.fail(`replication connection: ${err.message}`));
    socket.on("close", () => this.fail("the replication connection closed"));
    const { writer, back, lock, disks, diskLogs, output, policy, stats, input, link } = this;
    this.side = {
      vm, writer, back, lock, disks, diskLogs, output, policy, stats, lease, opts, input, link,
      // Without addresses a kept buffer may sit a few bytes off RAM's alignment, slower than a fresh one: keep none.
      staging: new PageStaging(opts.addressOf ? { addressOf: opts.addressOf } : { maxBatches: 0 }),
      stopped: () => this.stopped,
      nextPause: () => this.pauses++,
      takeOperatorWaiters: () => {
        const waiters = this.operatorWaiters;
        this.operatorWaiters = [];
        return waiters;
      },
      takeDivergence: () => {
        const divergence = this.pendingDivergence;
        this.pendingDivergence = undefined;
        return divergence;
      },
      endingCheckpoint0: () => (this.secondaryMayHoldCopy = true),
      resumeFailedAfterCheckpoint: (err) => this.resumeFailedAfterCheckpoint(err),
      heartbeat: () => this.heartbeat,
      replicating: (started) => this.replicating(started),
    };
  }

  /** Resolves when replication stops (secondary lost or stop()); the reason says why. */
  readonly done: Promise<string> = new Promise((resolve) => (this.lost = resolve));

  /** Disk sync, then the initial memory sync (checkpoint 0), then checkpoints as the policy says: primary-start.ts. */
  start(config: { path: string; text: string }): Promise<void> {
    return startPrimary(this.side, config);
  }

  /** The secondary holds checkpoint 0 (`started`, what the start took): heartbeats, compare mode's expiry poll, checkpoints. */
  private replicating(started: StartFigures): void {
    this.synced = true;
    this.started = started;
    this.watchdog.heard();
    this.heartbeat = new HeartbeatSender(this.writer, this.lock, this.opts.heartbeatMs, () => this.synced && !this.stopped, (err) =>
      this.fail(`heartbeat: ${err.message}`),
    );
    if (this.compare) {
      const compare = this.compare;
      this.expiryTimer = setInterval(() => compare.checkExpired(), EXPIRY_POLL_MS);
    }
    this.schedule();
  }

  /** Operator: a checkpoint now (within the minimum gap); resolves when it is complete. */
  checkpointNow(verifyDisks: boolean): Promise<OperatorCheckpoint> {
    if (this.stopped || !this.synced) return Promise.reject(new Error(`not replicating (${this.stats.mode})`));
    const p = new Promise<OperatorCheckpoint>((resolve, reject) => this.operatorWaiters.push({ verify: verifyDisks, resolve, reject }));
    this.request("operator");
    return p;
  }

  /** A reason to checkpoint (divergence, backlog, operator): the scheduler decides when. */
  request(reason: CheckpointReason, divergence?: Divergence): void {
    if (this.stopped) return;
    // The first reason since the last checkpoint is the one counted: so is its divergence.
    if (this.policy.requested === undefined) this.pendingDivergence = divergence;
    this.policy.request(reason);
    if (this.synced && !this.checkpointing) this.schedule();
  }

  private schedule(): void {
    if (this.stopped || this.stopping !== undefined || this.checkpointing) return;
    if (this.timer) clearTimeout(this.timer);
    const d = this.policy.decide(monotonicMs());
    if ("checkpoint" in d) {
      this.timer = undefined;
      this.checkpointing = true;
      this.inFlight = this.checkpoint(d.checkpoint).then(
        () => {
          this.checkpointing = false;
          this.schedule();
        },
        (err: unknown) => this.fail(`checkpoint failed: ${(err as Error).message}`),
      );
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.schedule();
    }, d.waitMs);
  }

  /** One checkpoint (COLO-PROTOCOL.md §4), the PVM paused once the SVM is: primary-checkpoint.ts. */
  checkpoint(reason: CheckpointReason): Promise<void> {
    return runCheckpoint(this.side, reason);
  }

  /**
   * Secondary lost: stop interposing; then, if this side may act alone
   * (no arbiter, or the arbiter marked our lease solo), release everything
   * held and run on unprotected; otherwise fence.
   */
  private fail(reason: string): void {
    if (!this.end(`replication stopped: ${reason}`)) return;
    this.socket.destroy();
    // Until decided, the guest's output stays held (the filter is still ours).
    void this.failover.goAlone(reason, this.synced || this.secondaryMayHoldCopy).finally(() => this.lost?.(reason));
  }

  /**
   * The PVM cannot resume after a checkpoint the secondary applied: hand
   * over, as for an engine failure (abandon: the secondary takes over from
   * this checkpoint, which covers all released output), and end this side.
   */
  private resumeFailedAfterCheckpoint(err: unknown): never {
    const reason = this.failover.resumeFailed(`checkpoint ${this.stats.checkpoints}`, err);
    this.abandon(reason);
    void this.vm.end(reason);
    throw err;
  }

  /**
   * Stops the session's timers, watchdog, heartbeats, mirroring and disk
   * forwarding, and rejects waiting operator checkpoints with `why`. False
   * when it had already ended.
   */
  private end(why: string): boolean {
    if (this.stopped) return false;
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.expiryTimer) clearInterval(this.expiryTimer);
    this.watchdog.stop();
    this.heartbeat?.stop();
    this.input.on = false;
    this.vm.setInputFilter(undefined);
    this.disks.stop();
    this.diskLogs.stop();
    for (const w of this.operatorWaiters) w.reject(new Error(why));
    this.operatorWaiters = [];
    return true;
  }

  /**
   * This side cannot go on (its engine failed, or it cannot resume after a
   * checkpoint): drop the replication connection without an orderly end, as
   * a dead host's would drop, so the secondary takes over from its last
   * checkpoint. Nothing is released and the VM is not resumed; the lease is
   * no longer renewed, and stays for the caller to give back.
   */
  abandon(reason: string): void {
    if (!this.end(`replication abandoned: ${reason}`)) return;
    // No renewal from here: a renewal while the daemon ends would tell the secondary this side lives on.
    void this.lease?.stop(false);
    this.vm.setOutputFilter(() => false);
    this.stats.failover("primary", reason, "handed-over");
    this.opts.log("handing over to the secondary: replication connection dropped", { reason });
    this.socket.destroy();
  }

  /**
   * Operator stop: end the stream in order (the secondary discards its copy
   * instead of taking over), then run on unprotected.
   */
  stop(reason: string): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.stopping ??= this.endInOrder(reason);
    return this.stopping;
  }

  private async endInOrder(reason: string): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    // The END goes after the checkpoint in flight, if one is: cutting the connection before it would make the
    // secondary take over (the primary "lost") while this side runs on: two copies. A checkpoint that never ends
    // is the peer's loss (the watchdog ends the session); the bound is for a writer that never drains.
    let timer: NodeJS.Timeout | undefined;
    const written = await Promise.race([
      (this.inFlight ?? Promise.resolve())
        .catch(() => undefined)
        .then(() => this.lock.run(async () => {
          if (this.stopped) return false;
          await this.writer.writeEnd();
          await this.writer.flush();
          return true;
        }))
        .catch(() => false),
      new Promise<false>((r) => (timer = setTimeout(() => r(false), STOP_END_TIMEOUT_MS))),
    ]);
    clearTimeout(timer);
    if (!written && !this.stopped && (this.synced || this.secondaryMayHoldCopy)) this.opts.log("the end of replication could not be written: the secondary may take over", { reason, waitedMs: STOP_END_TIMEOUT_MS });
    this.fail(reason);
  }

  /** A new session of this VM takes over the lease (same holder): stop renewing from this one. */
  async stopLease(): Promise<void> {
    await this.lease?.stop(false);
  }

  /** The VM is gone: give its lease back (a later session may take it). */
  async releaseLease(): Promise<void> {
    await this.lease?.stop(true);
    this.opts.arbiter?.arbiter.close();
  }

  get diskCount(): number {
    return this.vm.disks.length;
  }

  /** What `colo status` shows about the proxy and disks. */
  details(): Record<string, unknown> {
    return { mirroredFrames: this.mirroredFrames, disks: this.disks.stats(), activityLogs: { rewrites: this.diskLogs.rewrites, disks: this.diskLogs.status() } };
  }
}
