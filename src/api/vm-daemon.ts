import { mkdirSync } from "node:fs";
import type { Socket } from "node:net";
import type { PrimaryReplicator } from "../colo/primary.js";
import type { SecondaryReplicator } from "../colo/secondary.js";
import { hashBackendSync } from "../colo/disk/image-hash.js";
import { TranslationChain } from "../colo/net/link-translation.js";
import type { VmConfig } from "../config/index.js";
import { Vm } from "../vm/vm.js";
import { ControlServer, type ControlHandler } from "./control-server.js";
import { reportToParent as report } from "./daemon-ipc.js";
import { GuestStopHandler, type GuestStopDaemon } from "./daemon-guest-stop.js";
import { startReplication, type ReplicationDaemon } from "./daemon-replication.js";
import { nextPrimaryRequest, Reprotector, survivorRequest, type RemusRequest } from "./daemon-reprotect.js";
import { formatArbiterAddress } from "./arbiter-address.js";
import { DEFAULT_DIRTY_SAMPLE_MS, vmCheckFacts } from "./daemon-check.js";
import { boot, incoming, incomingSecondary, restore, type DaemonMode, type StartDaemon } from "./daemon-start.js";
import { migrateVm, saveVm, type TransferDaemon } from "./daemon-transfer.js";
import type { ConfigSource } from "./image-io.js";
import { daemonLogger, type Logger } from "./log.js";
import { LoopDelay } from "./loop-delay.js";
import { DaemonMetrics } from "./metrics.js";
import { runDir, vmRunFiles } from "./paths.js";
import { isDaemonAlive, removeStale } from "./registry.js";
import { readRecord, writeRecord } from "./vm-record.js";
import type { ControlRequest } from "./protocol.js";

export type { DaemonMode } from "./daemon-start.js";

/** What the daemon's parts (daemon-start, -replication, -transfer, -guest-stop) see of it. */
type DaemonParts = StartDaemon & ReplicationDaemon & TransferDaemon & GuestStopDaemon;

/**
 * The per-VM daemon process (`colo create`, `colo restore` and
 * `colo migrate-receive` spawn it; one process per VM, like one QEMU per
 * VM). Owns the VM and its control socket; removes its run files on every
 * exit it controls. How it gets its VM: daemon-start.ts; replication:
 * daemon-replication.ts; save and migrate: daemon-transfer.ts; guest stops:
 * daemon-guest-stop.ts.
 */
export class VmDaemon implements ControlHandler {
  private vm: Vm | undefined;
  private source: ConfigSource | undefined;
  private server: ControlServer | undefined;
  private exiting = false;
  private busy: string | undefined;
  /** A migration left the VM paused with its handover undecided (daemon-transfer.ts). */
  private handover: { state: "indeterminate"; to: string; reason: string } | undefined;
  private primary: PrimaryReplicator | undefined;
  private secondary: SecondaryReplicator | undefined;
  private readonly consoles = new Set<Socket>();
  /** The event loop's lateness since the daemon started (status `eventLoopDelay`); long stalls are logged. */
  private readonly loopDelay = new LoopDelay((lateMs) => this.log.warn({ lateMs }, "the event loop stalled: timers (heartbeats, lease renewals, watchdogs) ran late"));
  /** Prometheus metrics (the `metrics` request; `colo serve`): sessions watched as they are set, the rest read from the status at each scrape. */
  private readonly metrics = new DaemonMetrics();
  /** Ends when the running exclusive operation (save, migrate, ...) does. */
  private busyDone: Promise<unknown> | undefined;
  private readonly parts: DaemonParts;
  private readonly stops: GuestStopHandler;
  /** `--reprotect`: a side left running alone asks for a new secondary (daemon-reprotect.ts). */
  private readonly reprotector: Reprotector;
  /** An operator stopped replication (`colo failover` on the primary): its loss is not a reason to re-protect. */
  private operatorStopped = false;
  /** migrate-receive --colo --reprotect: what a takeover's re-protection request is built from. */
  private survivorSettings: Parameters<typeof survivorRequest>[1] | undefined;

  constructor(private readonly log: Logger) {
    this.parts = {
      log,
      register: (config, source, vmOptions) => this.register(config, source, vmOptions),
      requireVm: () => this.requireVm(),
      requireSource: () => this.requireSource(),
      setHandover: (h) => (this.handover = h),
      vm: () => this.vm,
      exiting: () => this.exiting,
      busyDone: () => this.busyDone,
      primary: () => this.primary,
      secondary: () => this.secondary,
      setPrimary: (primary) => {
        this.primary = primary;
        this.metrics.watch(primary.stats);
      },
      sessionRunning: (primary, r) => this.watchForReprotect(primary, r),
      setBusy: (what) => (this.busy = what),
      setSecondary: (secondary) => {
        this.secondary = secondary;
        this.metrics.watch(secondary.stats);
        const settings = this.survivorSettings;
        if (settings) {
          secondary.stats.observe({
            failover: (event, mode) => {
              // A takeover (not a step-down, a fence or a discard): the survivor asks for a new secondary.
              if (mode !== "unprotected" || this.exiting) return;
              this.reprotector.begin(survivorRequest(secondary.mode, settings), event.reason);
            },
          });
        }
      },
      exclusive: <T>(what: string, fn: () => Promise<T>): Promise<T> => this.exclusive(what, fn),
      actOnStopLeftByReplica: () => this.stops.actOnStopLeftByReplica(),
      shutdown: (code: number, reason: string, opts?: { handOver?: boolean }) => this.shutdown(code, reason, opts),
    };
    this.stops = new GuestStopHandler(this.parts);
    this.reprotector = new Reprotector({
      log,
      vmState: () => this.vm?.state ?? "none",
      sessionMode: () => (this.primary?.stats.mode === "primary" ? "primary" : (this.primary ?? this.secondary)?.stats.mode),
      exiting: () => this.exiting,
      protect: (request) => {
        if (this.busy) return Promise.reject(new Error(`the daemon is busy (${this.busy})`));
        return this.exclusive("re-protecting", () => startReplication(this.parts, request));
      },
    });
    this.metrics.setSource(() => ({ session: this.primary?.stats ?? this.secondary?.stats, status: this.vm ? this.status(this.vm) : {} }));
  }

  /** Claims the VM's name on this host: run files, control socket. */
  private async register(config: VmConfig, source: ConfigSource, vmOptions: { deferBridge?: boolean } = {}): Promise<Vm> {
    this.source = source;
    const dir = runDir();
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const files = vmRunFiles(config.name, dir);
    const existing = readRecord(files.record);
    if (existing && existing.pid !== process.pid && isDaemonAlive(existing.pid)) {
      throw new Error(`a VM named ${config.name} is already running on this host (pid ${existing.pid})`);
    }
    removeStale(config.name, dir);
    this.metrics.setVm(config.name);
    this.vm = new Vm(config, vmOptions);
    this.vm.onGuestStop((stop) => this.stops.guestStopped(stop));
    this.server = await ControlServer.listen(files.socket, this);
    writeRecord(files.record, {
      name: config.name,
      pid: process.pid,
      config: config.source,
      // Wall clock: an instant for `colo list` and the operator, never used to time anything.
      startedAt: new Date().toISOString(),
      ...(process.env.COLO_NETNS ? { netns: process.env.COLO_NETNS } : {}),
    });
    return this.vm;
  }

  async run(mode: DaemonMode): Promise<void> {
    if (mode.kind === "incoming" && mode.colo?.reprotect) {
      const c = mode.colo;
      this.survivorSettings = {
        keyFile: mode.keyFile,
        timeoutMs: c.timeoutMs,
        heartbeatMs: c.heartbeatMs,
        ...(c.arbiter ? { arbiter: formatArbiterAddress(c.arbiter), ...(c.leaseMs !== undefined ? { leaseMs: c.leaseMs } : {}) } : {}),
        reprotect: mode.colo.reprotect,
      };
    }
    switch (mode.kind) {
      case "boot":
        return boot(this.parts, mode.configPath);
      case "restore":
        return restore(this.parts, mode.file);
      case "incoming":
        return mode.colo ? incomingSecondary(this.parts, mode.listen, mode.keyFile, mode.timeoutMs, mode.colo) : incoming(this.parts, mode.listen, mode.keyFile, mode.timeoutMs);
    }
  }

  /** A session started with `--reprotect`: when it loses its secondary and runs on alone, protect again toward the target. */
  private watchForReprotect(primary: PrimaryReplicator, r: RemusRequest): void {
    this.operatorStopped = false;
    const next = nextPrimaryRequest(r);
    if (!next) return;
    primary.stats.observe({
      failover: (event, mode) => {
        if (mode !== "unprotected" || this.operatorStopped || this.exiting || this.primary !== primary) return;
        this.reprotector.begin(next, event.reason);
      },
    });
  }

  private requireVm(): Vm {
    if (!this.vm) throw new Error("VM not created yet");
    return this.vm;
  }

  async handle(request: Exclude<ControlRequest, { op: "console" }>, emit: (event: unknown) => void): Promise<unknown> {
    const vm = this.requireVm();
    if (this.busy && request.op !== "status" && request.op !== "console-tail" && request.op !== "metrics") {
      throw new Error(`${vm.name} is busy (${this.busy}); try again when it is done`);
    }
    switch (request.op) {
      case "status":
        return this.status(vm);
      case "metrics":
        return this.metrics.json();
      case "failover":
        return this.failover();
      case "checkpoint": {
        const primary = this.primary;
        if (!primary || primary.stats.mode !== "primary") throw new Error(`${vm.name} is not a replicating primary`);
        return primary.checkpointNow(request.verifyDisks === true);
      }
      case "disk-hashes": {
        if (this.secondary) return { role: "secondary", disks: await this.secondary.diskHashes() };
        const paused = vm.state === "paused";
        return {
          role: this.primary?.stats.mode === "primary" ? "primary" : "unprotected",
          ...(paused ? {} : { note: "the VM runs: its disks may change while they are hashed" }),
          disks: vm.diskSlots().map((slot, disk) => ({ disk, sha256: hashBackendSync(slot.raw).sha256 })),
        };
      }
      case "check": {
        const active = this.primary && this.primary.stats.mode === "primary" ? this.primary : undefined;
        const role = active ? { role: "primary" as const, peer: active.stats.peer } : this.secondary && !this.secondary.done ? { role: "secondary" as const } : { role: "unprotected" as const };
        return vmCheckFacts(vm, this.requireSource(), role, request.sampleMs ?? DEFAULT_DIRTY_SAMPLE_MS);
      }
      case "remus":
        return this.exclusive("starting replication", () => startReplication(this.parts, request));
      case "pause":
        await vm.pause();
        this.log.info("paused");
        return { state: vm.state };
      case "unpause":
        if (this.handover && request.force !== true) {
          throw new Error(`${vm.name} stays paused: its migration to ${this.handover.to} is undecided (${this.handover.reason}); unpause with --force only if the destination does not run it`);
        }
        await vm.unpause();
        if (this.handover) this.log.warn({ handover: this.handover }, "unpaused by force after an undecided migration");
        else this.log.info("unpaused");
        this.handover = undefined;
        return { state: vm.state };
      case "destroy":
        // Answer first, then go away.
        setImmediate(() => void this.shutdown(0, "destroy requested"));
        return { state: "destroying" };
      case "console-tail":
        return { text: vm.console.tailText(request.bytes ?? 4096) };
      case "save":
        return this.exclusive("saving", () => saveVm(this.parts, request.path, request.keepRunning === true));
      case "migrate":
        return this.exclusive("migrating", () => migrateVm(this.parts, request, emit));
    }
  }

  /** What `colo status` shows (docs/control-socket.md, docs/replication.md "Status"); the metrics read it too. */
  private status(vm: Vm): Record<string, unknown> {
    const replication = this.primary?.stats.snapshot() ?? this.secondary?.stats.snapshot();
    const active = this.primary && this.primary.stats.mode === "primary" ? this.primary : undefined;
    const output = active?.output.stats();
    const details = active?.details() ?? (this.secondary && !this.secondary.done ? this.secondary.details() : undefined);
    const link = vm.linkTranslation;
    const reprotect = this.reprotector.status();
    return {
      ...vm.status(),
      pid: process.pid,
      eventLoopDelay: this.loopDelay.snapshot(),
      ...(link instanceof TranslationChain ? { linkTranslation: { layers: link.depth, connections: link.connections() } } : {}),
      ...(this.busy ? { busy: this.busy } : {}),
      ...(this.handover ? { handover: this.handover } : {}),
      ...(reprotect ? { reprotect } : {}),
      ...(replication ? { replication } : {}),
      ...(output ? { heldOutput: output } : {}),
      ...(details ? { proxy: details } : {}),
    };
  }

  private async exclusive<T>(what: string, fn: () => Promise<T>): Promise<T> {
    this.busy = what;
    const run = fn();
    this.busyDone = run;
    try {
      return await run;
    } finally {
      this.busy = undefined;
      this.busyDone = undefined;
    }
  }

  private async failover(): Promise<unknown> {
    if (this.secondary && !this.secondary.done) {
      this.secondary.takeOverNow("operator failover");
      return { role: "secondary", action: "taking over" };
    }
    if (this.primary && this.primary.stats.mode === "primary") {
      this.operatorStopped = true;
      await this.primary.stop("operator failover");
      return { role: "primary", action: "replication stopped in order (the secondary discards its copy); running unprotected" };
    }
    throw new Error(`${this.requireVm().name} is not replicating`);
  }

  private requireSource(): ConfigSource {
    if (!this.source) throw new Error("the VM's configuration is not known");
    return this.source;
  }

  attachConsole(socket: Socket, replay: boolean): void {
    const vm = this.vm;
    if (!vm) {
      socket.destroy();
      return;
    }
    this.consoles.add(socket);
    if (replay) socket.write(vm.console.tailBytes());
    const unsubscribe = vm.console.subscribe((bytes) => socket.write(bytes));
    socket.on("data", (chunk: Buffer) => {
      if (vm.state === "running" || vm.state === "paused") vm.sendConsoleInput(chunk);
    });
    socket.on("close", () => {
      unsubscribe();
      this.consoles.delete(socket);
    });
    socket.resume();
  }

  /** Destroys the VM, closes the socket, removes the run files, exits. */
  /**
   * Ends the daemon. A protected VM going away ends replication in order
   * (its secondary must not take over) unless `handOver`: the primary's
   * engine failed, and the replication connection is dropped as a dead
   * host's would be, so that the secondary takes over.
   */
  async shutdown(code: number, reason: string, opts: { handOver?: boolean } = {}): Promise<void> {
    if (this.exiting) return;
    this.exiting = true;
    this.log.info({ reason }, "shutting down");
    this.reprotector.cancel(`the daemon is shutting down: ${reason}`);
    for (const s of this.consoles) s.destroy();
    if (this.primary && this.primary.stats.mode === "primary") {
      if (opts.handOver === true) this.primary.abandon(reason);
      else await this.primary.stop(`the VM is shutting down: ${reason}`);
    }
    try {
      await this.vm?.destroy();
    } catch (err) {
      this.log.error({ err }, "error while destroying the VM");
    }
    // The VM is gone: its arbiter lease (if any) is free for a later session.
    await Promise.race([Promise.all([this.primary?.releaseLease(), this.secondary?.releaseLease()]), new Promise((r) => setTimeout(r, 1000))]);
    try {
      await this.server?.close();
    } catch (err) {
      this.log.error({ err }, "error while closing the control socket");
    }
    if (this.vm) removeStale(this.vm.name);
    process.exit(code);
  }

  consoleTail(): string {
    return this.vm?.console.tailText(4096) ?? "";
  }
}

/** Entry point of the daemon process. */
export async function vmDaemonMain(mode: DaemonMode): Promise<void> {
  const log = daemonLogger(mode.kind === "boot" ? mode.configPath : mode.kind === "restore" ? mode.file : `incoming ${mode.listen.host}:${mode.listen.port}`);
  const daemon = new VmDaemon(log);
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
    process.on(sig, () => void daemon.shutdown(0, sig));
  }
  process.on("uncaughtException", (err) => {
    log.fatal({ err }, "uncaught exception");
    report({ type: "failed", error: `VM daemon crashed: ${err.message}`, consoleTail: daemon.consoleTail() });
    void daemon.shutdown(1, "uncaught exception");
  });
  try {
    await daemon.run(mode);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    log.error({ err }, "start failed");
    report({ type: "failed", error: message, consoleTail: daemon.consoleTail() });
    await daemon.shutdown(1, "start failed");
  }
  if (process.connected) process.disconnect();
}
