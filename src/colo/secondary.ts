/**
 * The secondary side of a Remus-mode replication session (issue 4). The
 * secondary VM holds the primary's last complete checkpoint, paused (in
 * Remus mode the backup does not run). For each checkpoint it answers
 * SVM_SUSPENDED and its dirty list, buffers every record of the checkpoint
 * and applies nothing until CHECKPOINT_END has arrived (a half-received
 * checkpoint is discarded), then answers SVM_READY and SVM_RESUMED.
 *
 * Primary lost (I/O error, END, silence past the timeout): the VM takes
 * over from the last complete checkpoint -- its TAP joins the LAN, it
 * resumes, and announces its MAC.
 */
import type { TLSSocket } from "node:tls";
import type { Engine } from "../engine/engine.js";
import { machineHeader, PageBuffer, StreamWriter, writableSink, type StreamReader } from "../state/index.js";
import { ReplicationStats } from "./replication-stats.js";
import { HeartbeatSender, WriteLock } from "./heartbeat.js";

export interface SecondaryVm {
  readonly engine: Engine;
  /** Failover: join the LAN, resume, announce. */
  takeOver(): Promise<void>;
  /** The primary ended replication in order: this copy is not needed. */
  discard(): Promise<void>;
}

/** The primary's orderly END: not a failure, no takeover. */
const ORDERLY_END = "the primary ended replication";

export interface SecondaryOptions {
  timeoutMs: number;
  heartbeatMs: number;
  log: (msg: string, fields?: Record<string, unknown>) => void;
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

  constructor(
    private readonly vm: SecondaryVm,
    private readonly socket: TLSSocket,
    private readonly reader: StreamReader,
    peer: string,
    private readonly opts: SecondaryOptions,
  ) {
    this.stats = new ReplicationStats("secondary", peer);
    this.writer = new StreamWriter(writableSink(socket), { machine: machineHeader(vm.engine.id, vm.engine.memoryBytes), channel: "back-channel" });
    this.pending = new PageBuffer(vm.engine.pageCount);
    socket.on("data", () => this.stats.heard());
    socket.setTimeout(opts.timeoutMs, () => socket.destroy(new Error(`no word from the primary for ${opts.timeoutMs} ms`)));
  }

  /**
   * Runs the session after checkpoint 0 was applied (the VM holds it,
   * paused). Resolves with the reason when the primary is gone and this VM
   * has taken over.
   */
  async run(): Promise<string> {
    this.applied = 1;
    this.vm.engine.takeDirtyPages(); // the SVM's own writes count from here
    let reason: string;
    try {
      await this.lock.run(() => this.writer.writeCheckpointState("SVM_READY"));
      this.heartbeat = new HeartbeatSender(this.writer, this.lock, this.opts.heartbeatMs, () => !this.finished, (err) =>
        this.socket.destroy(new Error(`heartbeat: ${err.message}`)),
      );
      reason = await this.loop();
    } catch (err) {
      reason = (err as Error).message;
    }
    if (this.pending.size > 0 || this.midCheckpoint) {
      this.stats.discardedCheckpoints++;
    }
    this.pending.clear();
    this.finished = true;
    this.heartbeat?.stop();
    this.socket.destroy();
    if (reason === ORDERLY_END) {
      this.stats.mode = "unprotected";
      this.opts.log("the primary ended replication in order; discarding this copy", {});
      await this.vm.discard();
      return reason;
    }
    this.stats.failover("secondary", reason);
    this.opts.log("primary lost; taking over from the last complete checkpoint", { reason, checkpoint: this.applied - 1, discarded: this.stats.discardedCheckpoints });
    await this.vm.takeOver();
    return reason;
  }

  private async loop(): Promise<string> {
    const engine = this.vm.engine;
    let state: Uint8Array | undefined;
    let inCheckpoint = false;
    for (;;) {
      const r = await this.reader.next();
      if (!r) return "the primary closed the replication stream";
      switch (r.kind) {
        case "checkpoint-state":
          if (r.control !== "NEW") throw new Error(`unexpected ${r.control} from the primary`);
          // Remus: the SVM is paused already; its dirty list is what it wrote since the last checkpoint.
          await this.lock.run(async () => {
            await this.writer.writeCheckpointState("SVM_SUSPENDED");
            await this.writer.writeMemoryStream();
            const dirty = engine.takeDirtyPages();
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
        case "checkpoint":
          break;
        case "checkpoint-end": {
          if (!inCheckpoint || !state) throw new Error("CHECKPOINT_END without a complete checkpoint");
          // Complete: apply memory, then CPU and device state, atomically w.r.t. the guest (paused).
          const pages = this.pending.size;
          this.pending.applyTo(engine.ram());
          await engine.loadState(state);
          engine.takeDirtyPages();
          this.pending.clear();
          inCheckpoint = false;
          this.midCheckpoint = false;
          this.applied++;
          this.stats.recordCheckpoint(0, pages, 0);
          await this.lock.run(async () => {
            await this.writer.writeCheckpointState("SVM_READY");
            await this.writer.writeCheckpointState("SVM_RESUMED");
          });
          this.heartbeat?.wrote();
          break;
        }
        case "end":
          return ORDERLY_END;
        case "heartbeat":
          break;
        default:
          throw new Error(`unexpected ${r.kind} record from the primary`);
      }
    }
  }

  /** Operator failover: stop listening to the primary and take over now. */
  takeOverNow(reason: string): void {
    this.socket.destroy(new Error(reason));
  }

  get done(): boolean {
    return this.finished;
  }
}
