/**
 * One checkpoint of the primary's session (COLO-PROTOCOL.md §4): the
 * sequence primary.ts's header lays out. NEW first and the secondary's
 * answer awaited with the PVM still running (QEMU's order: the SVM's
 * suspend and dirty scan are not the PVM's pause); then, Xen's order for
 * the rest -- the PVM paused, everything the checkpoint holds copied while
 * it is paused, the PVM resumed, then the checkpoint written from the
 * copies, its output released at SVM_READY.
 *
 * PrimaryReplicator (primary.ts) decides when (its policy) and runs one at
 * a time; a checkpoint that fails is its `fail`. A resume that fails hands
 * over, once the secondary applied the checkpoint. */
import { unionSortedPfns, stagePages, writeStagedPages, type PageStaging, type StreamWriter } from "../state/index.js";
import type { BackChannel } from "./back-channel.js";
import type { CheckpointPolicy, CheckpointReason } from "./checkpoint-policy.js";
import type { OutputCommit } from "./compare-output.js";
import type { DiskForwarder } from "./disk-forwarder.js";
import { hashBackendSync } from "./disk/image-hash.js";
import type { HeartbeatSender, WriteLock } from "./heartbeat.js";
import type { Divergence } from "./net/comparator.js";
import type { PrimaryDiskLogs } from "./primary-disk-logs.js";
import type { LinkTranslationSender } from "./primary-link-translation.js";
import type { InputMirror } from "./primary-mirror.js";
import type { PrimaryOptions, PrimaryVm } from "./primary.js";
import type { ReplicationStats } from "./replication-stats.js";
import { monotonicMs } from "../sys/clock.js";

/** What an operator checkpoint reports. */
export interface OperatorCheckpoint {
  checkpoint: number;
  pauseMs: number;
  /** Pause to SVM_READY: the guest ran again after `pauseMs`, its output held until then. */
  commitMs: number;
  /** With verifyDisks: SHA-256 of each replicated disk, taken while the PVM was paused inside the checkpoint. */
  diskHashes?: { disk: number; sha256: string }[];
}

/** An operator waiting for the next checkpoint (`checkpointNow`). */
export interface OperatorWaiter {
  verify: boolean;
  resolve: (r: OperatorCheckpoint) => void;
  reject: (e: Error) => void;
}

/** What a checkpoint needs of the primary's session. */
export interface CheckpointSide {
  readonly vm: PrimaryVm;
  readonly writer: StreamWriter;
  readonly back: BackChannel;
  readonly lock: WriteLock;
  /** Reused buffers the paused PVM's pages are copied into (page-staging.ts). */
  readonly staging: PageStaging;
  readonly disks: DiskForwarder;
  readonly diskLogs: PrimaryDiskLogs;
  readonly output: OutputCommit;
  readonly policy: CheckpointPolicy;
  readonly stats: ReplicationStats;
  readonly opts: Pick<PrimaryOptions, "mode" | "midCheckpointDelayMs">;
  /** Replication ended (secondary lost, stop, abandon). */
  stopped(): boolean;
  /** The next checkpoint pause's number (its epoch), counted. */
  nextPause(): number;
  /** The operators waiting for this checkpoint, and the divergence behind its reason: taken, none left. */
  takeOperatorWaiters(): OperatorWaiter[];
  takeDivergence(): Divergence | undefined;
  readonly input: InputMirror;
  readonly link: LinkTranslationSender;
  resumeFailedAfterCheckpoint(err: unknown): never;
  heartbeat(): HeartbeatSender | undefined;
}

/** One checkpoint (COLO-PROTOCOL.md §4): the secondary suspended first, then the PVM paused, copied and resumed. */
export async function runCheckpoint(side: CheckpointSide, reason: CheckpointReason): Promise<void> {
  const engine = side.vm.engine;
  let mark = monotonicMs();
  const marks: Record<string, number> = {};
  const lap = (name: string) => {
    const now = monotonicMs();
    marks[name] = Math.round((now - mark) * 10) / 10;
    mark = now;
  };
  // QEMU's order (colo_do_checkpoint_transaction): NEW, and the PVM runs on while the secondary suspends
  // the SVM and finds its dirty pages. From NEW until the queued input is re-sent after CHECKPOINT_END the
  // PVM's new input is not mirrored: what it takes before its pause is in the checkpoint's state, what it
  // has not taken then is re-sent after CHECKPOINT_END (the next epoch's). Its output meanwhile goes to the
  // comparator as before and is sealed into this checkpoint at the pause. The write lock is held from NEW
  // on (no record may come between NEW and the memory part, a heartbeat neither): the PVM's disk writes
  // until its pause are held and written inside this checkpoint, before the DISK_CHECKPOINT that covers
  // them. A failure before the pause leaves a running PVM: the session's end (primary.ts) rejects the
  // operators still waiting.
  let waiters: OperatorWaiter[] = [];
  const failed = (err: unknown): never => {
    for (const w of waiters) w.reject(err as Error);
    throw err;
  };
  let diskHashes: { disk: number; sha256: string }[] | undefined;
  let divergence: ReturnType<CheckpointSide["takeDivergence"]>;
  // A resume that fails hands over (the secondary takes over from this checkpoint), but only once the
  // secondary applied it: the output it covers may leave then, as it would have.
  let resumeFailure: { err: unknown } | undefined;
  let pausedAt = 0;
  let resumedAt = 0;
  let engineStoppedMs: number | undefined;
  side.input.on = false;
  // Held from the moment the turn is asked for, not when it starts: a write while the lock is still busy
  // (a record draining) would otherwise queue behind the whole checkpoint though its seal covers it.
  side.disks.holdWrites();
  const { pages, before } = await side.lock.run(async () => {
    await side.writer.writeCheckpointState("NEW");
    // At once: the link coalesces a turn's records (uncorked now, not after this callback's work).
    side.writer.sendNow();
    lap("new");
    await side.back.expectState("SVM_SUSPENDED");
    const svmDirty = await side.back.svmDirtyList();
    lap("svmSuspended");
    // Replication ended meanwhile: the session's end decides whether the VM runs, not a pause from here.
    if (side.stopped()) throw new Error("replication ended during the checkpoint");
    // The new epoch first: a write landing while the pause takes effect counts as after it (a superset).
    side.diskLogs.paused(side.nextPause());
    await side.vm.pause();
    lap("pause");
    pausedAt = resumedAt = mark;
    // What this checkpoint serves is fixed here: an operator, a divergence or any reason from now on asks for the next.
    waiters = side.takeOperatorWaiters();
    divergence = side.takeDivergence();
    side.policy.sealed();
    diskHashes = waiters.some((w) => w.verify) ? side.vm.disks.map((d) => ({ disk: d.index, sha256: hashBackendSync(d.local).sha256 })) : undefined;
    side.output.seal();
    const pvmDirty = engine.takeDirtyPages();
    lap("pvmDirty");
    // The device state is saved while this thread copies pages: QEMU writes it in its own process (emu saves
    // here, at once). Started after the dirty scan, which reads QEMU's page tables (measured: started before
    // it, the scan's slowest 1% took 8-13 ms instead of 1). Awaited after the copy.
    const saving = engine.saveState();
    saving.catch(() => undefined); // awaited below; a checkpoint that fails before then reports its own error
    const pfns = unionSortedPfns(pvmDirty, svmDirty);
    // Xen's order: everything the checkpoint holds is copied while the PVM is paused -- its pages into a
    // staging buffer, its device state, what its disks' writes cover, its link translation, the input it
    // has not taken -- and the PVM resumes before any of it is written. From the resume on, its new input
    // is mirrored and its disk writes forwarded through the write lock, which this checkpoint holds: they
    // reach the stream after CHECKPOINT_END, as the next epoch's. Its output is held apart (seal()).
    const staged = stagePages(side.writer.machine, engine.ram(), pfns, (copied, sent) => engine.pagesCopied(copied, sent), side.staging);
    // The staging buffers serve the next checkpoint once written (writeStagedPages) or once this one failed.
    try {
      lap("pages");
      const blob = await saving;
      lap("saveState"); // what is left of the device-state save once the pages are copied
      const sealedWrites = side.disks.seal();
      const link = side.link.due();
      if (side.stopped()) throw new Error("replication ended during the checkpoint");
      // Test hook (a kill inside a checkpoint): the guest stays paused, the stream holds NEW and no CHECKPOINT_END.
      if (side.opts.midCheckpointDelayMs) await new Promise((r) => setTimeout(r, side.opts.midCheckpointDelayMs));
      const queued = side.opts.mode === "compare" ? side.vm.engine.pendingRx() : [];
      side.input.on = side.opts.mode === "compare";
      resumeFailure = await side.vm.resume().then(
        () => undefined,
        (err: unknown) => ({ err }),
      );
      resumedAt = monotonicMs();
      lap("resume");
      engineStoppedMs = engine.lastStoppedMs?.();
      const before = side.writer.bytesWritten;
      await side.writer.writeMemoryStream();
      const pages = await writeStagedPages(side.writer, staged);
      await side.writer.writeEngineState({ engineId: engine.id, formatVersion: engine.stateFormatVersion, blob });
      await side.writer.writeCheckpoint();
      await side.disks.writeCheckpoint(sealedWrites);
      if (link) await side.writer.writeLinkTranslation(link);
      const end = side.writer.writeCheckpointEnd();
      side.input.resend(queued);
      await end;
      lap("send");
      return { pages, before };
    } finally {
      staged.lease?.release();
    }
  }).catch(failed);
  // The write lock is free while the secondary loads: heartbeats go on (a qemu secondary's load may wait for
  // its standby QEMU), and the secondary's watchdog does not take its own slow load for our silence.
  await (async () => {
    await side.back.expectState("SVM_READY");
    lap("svmReady");
    // Replication ended meanwhile (secondary lost, stop): what is released and whether the VM runs is goAlone's.
    if (side.stopped()) throw new Error("replication ended during the checkpoint");
    for (const f of side.output.committed()) side.vm.sendOutput(f);
    if (resumeFailure) side.resumeFailedAfterCheckpoint(resumeFailure.err);
    const now = monotonicMs();
    side.policy.done(reason, now);
    side.stats.recordCheckpoint({
      pauseMs: Math.round(resumedAt - pausedAt),
      ...(engineStoppedMs !== undefined ? { engineStoppedMs: Math.round(engineStoppedMs * 10) / 10 } : {}),
      commitMs: Math.round(now - pausedAt),
      pages: pages.pages,
      bytes: side.writer.bytesWritten - before,
      reason,
      phasesMs: marks,
      ...(divergence ? { divergence } : {}),
    });
    side.heartbeat()?.wrote();
    await side.back.expectState("SVM_RESUMED");
  })().catch(failed);
  const done: OperatorCheckpoint = { checkpoint: side.stats.checkpoints - 1, pauseMs: side.stats.lastPauseMs, commitMs: side.stats.lastCommitMs ?? side.stats.lastPauseMs };
  for (const w of waiters) w.resolve(w.verify && diskHashes ? { ...done, diskHashes } : done);
}
