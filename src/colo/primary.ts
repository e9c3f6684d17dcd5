/**
 * The primary side of a Remus-mode replication session (COLO-PROTOCOL.md
 * §4; issue 4). The session starts as a live migration whose last memory
 * part ends with CHECKPOINT (checkpoint 0); then every `intervalMs`:
 *
 *   NEW -> pause PVM -> SVM_SUSPENDED + SVM dirty list -> send union of
 *   dirty pages, engine state, CHECKPOINT, CHECKPOINT_END -> SVM_READY ->
 *   release the output of the epoch -> resume PVM -> (SVM_RESUMED)
 *
 * Output (every frame the PVM sends) is held until the checkpoint that
 * covers it is acknowledged. If the secondary is lost (I/O error, silence
 * past the timeout), held output is released and the VM runs on
 * unprotected.
 */
import type { TLSSocket } from "node:tls";
import type { Engine } from "../engine/engine.js";
import { machineHeader, StreamReader, StreamWriter, writableSink, writePages, unionSortedPfns, type StreamRecord } from "../state/index.js";
import { sendMachine } from "../state/machine-transfer.js";
import { OutputBuffer } from "./output-buffer.js";
import { HeartbeatSender, WriteLock } from "./heartbeat.js";
import { ReplicationStats } from "./replication-stats.js";

export interface PrimaryVm {
  readonly engine: Engine;
  pause(): Promise<void>;
  resume(): Promise<void>;
  setOutputFilter(filter: ((frame: Uint8Array) => boolean) | undefined): void;
  sendOutput(frame: Uint8Array): void;
}

export interface PrimaryOptions {
  intervalMs: number;
  /** Silence from the secondary longer than this is a loss. */
  timeoutMs: number;
  /** Write a heartbeat when nothing was sent for this long. */
  heartbeatMs: number;
  log: (msg: string, fields?: Record<string, unknown>) => void;
  /** Test hook: delay inside a checkpoint, after the pages are sent (COLO_TEST_CHECKPOINT_DELAY_MS). */
  midCheckpointDelayMs?: number;
}

class BackChannel {
  private readonly reader: StreamReader;
  constructor(socket: TLSSocket) {
    this.reader = new StreamReader(socket, { channel: "back-channel" });
  }
  /** Next record that is not optional, or throws when the channel ends. */
  async next(): Promise<StreamRecord> {
    for (;;) {
      const r = await this.reader.next();
      if (!r) throw new Error("the secondary closed the replication connection");
      if (r.kind === "skipped" || r.kind === "machine-header" || r.kind === "heartbeat") continue;
      return r;
    }
  }
  async expectState(control: string): Promise<void> {
    const r = await this.next();
    if (r.kind !== "checkpoint-state" || r.control !== control) throw new Error(`expected ${control} from the secondary, got ${r.kind}${r.kind === "checkpoint-state" ? ` ${r.control}` : ""}`);
  }
}

export class PrimaryReplicator {
  readonly stats: ReplicationStats;
  readonly output = new OutputBuffer();
  private writer: StreamWriter;
  private back: BackChannel;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private lost: ((reason: string) => void) | undefined;
  private readonly lock = new WriteLock();
  private heartbeat: HeartbeatSender | undefined;
  private synced = false;

  constructor(
    private readonly vm: PrimaryVm,
    private readonly socket: TLSSocket,
    peer: string,
    private readonly opts: PrimaryOptions,
  ) {
    this.stats = new ReplicationStats("primary", peer);
    this.writer = new StreamWriter(writableSink(socket), { machine: machineHeader(vm.engine.id, vm.engine.memoryBytes) });
    this.back = new BackChannel(socket);
    socket.on("data", () => this.stats.heard());
    socket.setTimeout(opts.timeoutMs, () => this.fail(`no word from the secondary for ${opts.timeoutMs} ms`));
    socket.on("error", (err) => this.fail(`replication connection: ${err.message}`));
    socket.on("close", () => this.fail("the replication connection closed"));
  }

  /** Resolves when replication stops (secondary lost or stop()); the reason says why. */
  readonly done: Promise<string> = new Promise((resolve) => (this.lost = resolve));

  /** Initial sync (a live migration ending in checkpoint 0), then periodic checkpoints. */
  async start(config: { path: string; text: string }): Promise<void> {
    this.vm.setOutputFilter((frame) => {
      this.output.hold(frame);
      return false;
    });
    await this.writer.writeVmConfig(config);
    const t0 = Date.now();
    const sent = await sendMachine(this.vm.engine, this.writer, {
      live: true,
      close: "checkpoint",
      pause: () => this.vm.pause(),
    });
    await this.writer.writeCheckpointEnd();
    const epoch = this.output.seal();
    await this.back.expectState("SVM_READY");
    for (const f of this.output.release(epoch)) this.vm.sendOutput(f);
    await this.vm.resume();
    this.stats.recordCheckpoint(Date.now() - sent.pausedAt, sent.pages, sent.bytes);
    this.opts.log("replication started: secondary holds checkpoint 0", { ms: Date.now() - t0, pages: sent.pages });
    this.synced = true;
    this.heartbeat = new HeartbeatSender(this.writer, this.lock, this.opts.heartbeatMs, () => this.synced && !this.stopped, (err) =>
      this.fail(`heartbeat: ${err.message}`),
    );
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.lock.run(() => this.checkpoint()).then(
        () => this.schedule(),
        (err: unknown) => this.fail(`checkpoint failed: ${(err as Error).message}`),
      );
    }, this.opts.intervalMs);
  }

  /** One checkpoint, Xen's order (COLO-PROTOCOL.md §4). */
  async checkpoint(): Promise<void> {
    const engine = this.vm.engine;
    await this.writer.writeCheckpointState("NEW");
    await this.vm.pause();
    const pausedAt = Date.now();
    const epoch = this.output.seal();
    await this.back.expectState("SVM_SUSPENDED");
    let svmDirty: Uint32Array = new Uint32Array(0);
    for (;;) {
      const r = await this.back.next();
      if (r.kind === "memory-stream") continue;
      if (r.kind === "dirty-pfn-list") svmDirty = unionSortedPfns(svmDirty, r.pfns);
      else if (r.kind === "checkpoint") break;
      else throw new Error(`unexpected ${r.kind} in the secondary's dirty list`);
    }
    const pfns = unionSortedPfns(engine.takeDirtyPages(), svmDirty);
    const before = this.writer.bytesWritten;
    await this.writer.writeMemoryStream();
    const pages = await writePages(this.writer, () => engine.ram(), pfns, (copied) => engine.pagesCopied(copied));
    if (this.opts.midCheckpointDelayMs) await new Promise((r) => setTimeout(r, this.opts.midCheckpointDelayMs));
    const blob = await engine.saveState();
    await this.writer.writeEngineState({ engineId: engine.id, formatVersion: engine.stateFormatVersion, blob });
    await this.writer.writeCheckpoint();
    await this.writer.writeCheckpointEnd();
    await this.back.expectState("SVM_READY");
    for (const f of this.output.release(epoch)) this.vm.sendOutput(f);
    await this.vm.resume();
    this.stats.recordCheckpoint(Date.now() - pausedAt, pages.pages, this.writer.bytesWritten - before);
    this.heartbeat?.wrote();
    await this.back.expectState("SVM_RESUMED");
  }

  /** Secondary lost: release everything held, stop interposing, run on unprotected. */
  private fail(reason: string): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.heartbeat?.stop();
    this.vm.setOutputFilter(undefined);
    for (const f of this.output.releaseAll()) this.vm.sendOutput(f);
    this.stats.failover("primary", reason);
    this.opts.log("secondary lost; running on unprotected", { reason });
    this.socket.destroy();
    void this.vm.resume().catch(() => undefined);
    this.lost?.(reason);
  }

  /**
   * Operator stop: end the stream in order (the secondary discards its copy
   * instead of taking over), then run on unprotected.
   */
  async stop(reason: string): Promise<void> {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    try {
      await Promise.race([
        this.lock.run(async () => {
          await this.writer.writeEnd();
          await this.writer.flush();
        }),
        new Promise((r) => setTimeout(r, 2000)),
      ]);
    } catch {
      // the connection is gone already: same outcome
    }
    this.fail(reason);
  }
}
