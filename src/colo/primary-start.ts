/**
 * The start of the primary's session, up to checkpoint 0 (COLO-PROTOCOL.md
 * §4, §6): the lease, VM_CONFIG, ENGINE_COMPAT, REPLICATION_MODE, a
 * survivor's LINK_TRANSLATION, the disks' initial sync (their plans from
 * the secondary's DISK_LOG where its activity logs allow), then a live
 * migration whose last memory part ends with CHECKPOINT: checkpoint 0,
 * in Xen's order as every later one (the PVM resumes before SVM_READY, its
 * output held apart until then).
 *
 * PrimaryReplicator (primary.ts) takes it from there (`replicating`):
 * heartbeats, and checkpoints as its policy says.
 */
import type { StreamWriter } from "../state/index.js";
import { sendMachine, writeEngineCompat } from "../state/machine-transfer.js";
import type { BackChannel } from "./back-channel.js";
import type { CheckpointPolicy } from "./checkpoint-policy.js";
import type { OutputCommit } from "./compare-output.js";
import type { DiskForwarder } from "./disk-forwarder.js";
import type { LeaseKeeper } from "./lease.js";
import type { PrimaryDiskLogs } from "./primary-disk-logs.js";
import type { LinkTranslationSender } from "./primary-link-translation.js";
import type { InputMirror } from "./primary-mirror.js";
import type { PrimaryOptions, PrimaryVm } from "./primary.js";
import type { ReplicationStats } from "./replication-stats.js";
import { elapsedMs, monotonicMs } from "../sys/clock.js";

/** How long the primary waits for the secondary's first record (DISK_LOG) before its disks' DISK_INFO: a revision-7 secondary sends none. */
export const DEFAULT_DISK_LOG_WAIT_MS = 10_000;

/** The start of a session, up to checkpoint 0: its pause, the memory sent, the disk chunks copied (what differed). */
export interface StartFigures {
  totalMs: number;
  /** The guest's pause for checkpoint 0. */
  pauseMs: number;
  /** From that pause until the secondary held checkpoint 0 (SVM_READY); the guest ran from `pauseMs` on. */
  commitMs: number;
  pages: number;
  bytes: number;
  disk: { chunksCopied: number; bytesCopied: number; ms: number; byLog: number };
}

/** What the start needs of the primary's session. */
export interface StartSide {
  readonly vm: PrimaryVm;
  readonly writer: StreamWriter;
  readonly back: BackChannel;
  readonly disks: DiskForwarder;
  readonly diskLogs: PrimaryDiskLogs;
  readonly output: OutputCommit;
  readonly policy: CheckpointPolicy;
  readonly stats: ReplicationStats;
  readonly lease: LeaseKeeper | undefined;
  readonly opts: Pick<PrimaryOptions, "mode" | "diskLogWaitMs" | "log">;
  /** Replication ended (secondary lost, stop, abandon). */
  stopped(): boolean;
  /** The next checkpoint pause's number (its epoch), counted. */
  nextPause(): number;
  readonly input: InputMirror;
  readonly link: LinkTranslationSender;
  /** CHECKPOINT_END of checkpoint 0 is (being) sent: the secondary may hold a copy it can take over with. */
  endingCheckpoint0(): void;
  /** The secondary holds checkpoint 0 (`started`, what the start took): replication runs. */
  replicating(started: StartFigures): void;
}

/** Disk sync, then the initial memory sync (checkpoint 0); `replicating` then starts the checkpoints. */
export async function startPrimary(side: StartSide, config: { path: string; text: string }): Promise<void> {
  // Until the pause for checkpoint 0 the secondary holds no copy it could take over with (a start that fails
  // leaves the VM running unprotected, never fenced): the output goes out as it would unprotected. Held, it
  // gained nothing and stalled every client for the whole start (disk hashing, memory pre-copy: 6 s measured).
  // From the pause on it is held as in any checkpoint, and what the pause caught is released with checkpoint 0.
  let beforeCheckpoint0 = true;
  side.vm.setOutputFilter((frame) => {
    if (beforeCheckpoint0) return true;
    side.output.output(frame);
    return false;
  });
  if (side.lease) {
    if (!(await side.lease.tryAcquire(false))) throw new Error(`the arbiter did not grant the lease of ${side.lease.vm}: ${side.lease.status().lastError ?? "?"}`);
    side.lease.keep();
  }
  await side.writer.writeVmConfig(config);
  // Before the mode and the disks: a secondary whose engine cannot load this one's state refuses here.
  await writeEngineCompat(side.vm.engine, side.writer);
  await side.writer.writeReplicationMode({ mode: side.opts.mode, disks: side.vm.disks.length > 0 });
  // A survivor's translations: a secondary that takes over keeps them above its own rewriter.
  await side.link.send(true);
  const t0 = monotonicMs();
  // A revision-8 secondary's first record is DISK_LOG (its lineage and logs): the disks' plans depend on it. Without
  // a log here no plan can come of it: no wait, the hashing overlaps the secondary's start, and the DISK_LOG (which
  // precedes any DISK_WANT) is taken once the disks are in sync.
  const waitForLog = side.diskLogs.mayPlan();
  if (waitForLog) side.diskLogs.begin(await side.back.firstRecord(side.opts.diskLogWaitMs ?? DEFAULT_DISK_LOG_WAIT_MS));
  const diskSync = await side.disks.initialSync(side.back, (index, size) => side.diskLogs.plan(index, size));
  if (!waitForLog && side.vm.disks.length > 0) side.diskLogs.begin(await side.back.firstRecord(0));
  if (diskSync.disks > 0) side.opts.log("disk images in sync", { ...diskSync });
  await side.disks.holdUntilCheckpoint();
  const sent = await sendMachine(side.vm.engine, side.writer, {
    live: true,
    close: "checkpoint",
    pause: () => {
      beforeCheckpoint0 = false;
      // The new epoch first: a write landing while the pause takes effect counts as after it (a superset).
      side.diskLogs.paused(side.nextPause());
      return side.vm.pause();
    },
  });
  await side.disks.writeCheckpoint();
  // From the first octet of CHECKPOINT_END on, the secondary may hold checkpoint 0 and take over with it: losing
  // it now is a loss like any later one (the arbiter's solo mark or a fence), not a failed start.
  side.endingCheckpoint0();
  await side.writer.writeCheckpointEnd();
  side.output.seal();
  side.input.resendQueued();
  // Xen's order, as in every checkpoint: the PVM runs while the secondary loads checkpoint 0 (the longest
  // load: all of RAM), its output held apart until SVM_READY.
  if (side.stopped()) throw new Error("replication ended during its start");
  await side.vm.resume();
  const pauseMs = elapsedMs(sent.pausedAt);
  await side.back.expectState("SVM_READY");
  // Ended meanwhile (a stop, the link lost): what happens to the VM is the end's (goAlone), not the start's.
  if (side.stopped()) throw new Error("replication ended during its start");
  for (const f of side.output.committed()) side.vm.sendOutput(f);
  const commitMs = elapsedMs(sent.pausedAt);
  side.policy.restart(monotonicMs());
  side.stats.recordCheckpoint({ pauseMs, commitMs, pages: sent.pages, bytes: sent.bytes, reason: "initial" });
  side.opts.log("replication started: secondary holds checkpoint 0", { mode: side.opts.mode, ms: elapsedMs(t0), pages: sent.pages, pauseMs, commitMs });
  side.replicating({
    totalMs: elapsedMs(t0),
    pauseMs,
    commitMs,
    pages: sent.pages,
    bytes: sent.bytes,
    disk: { chunksCopied: diskSync.chunksCopied, bytesCopied: diskSync.bytesCopied, ms: diskSync.ms, byLog: diskSync.byLog },
  });
}
