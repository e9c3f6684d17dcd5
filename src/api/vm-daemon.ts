import { mkdirSync } from "node:fs";
import { readFile } from "node:fs/promises";
import type { Socket } from "node:net";
import type { Readable } from "node:stream";
import { parseVmConfig, type VmConfig } from "../config/index.js";
import { loadKey } from "../channel/key.js";
import type { Endpoint } from "../channel/secure-channel.js";
import { GUEST_FAILED_MARKER, GUEST_READY_MARKER, Vm } from "../vm/vm.js";
import { ControlServer, type ControlHandler } from "./control-server.js";
import type { DaemonReport } from "./daemon-ipc.js";
import { openSaveFile, readConfig, readMachine, saveToFile, type ConfigSource } from "./image-io.js";
import { daemonLogger, type Logger } from "./log.js";
import { acceptIncoming, migrateOut, type Incoming } from "./migration.js";
import { connectSecure } from "../channel/secure-channel.js";
import { PrimaryReplicator } from "../colo/primary.js";
import { ArbiterClient, DEFAULT_ARBITER_PORT } from "./arbiter.js";
import { DEFAULT_LEASE_TTL_MS, type ArbiterOptions } from "../colo/lease.js";
import { parseEndpoint } from "../channel/secure-channel.js";
import { SecondaryReplicator, type SecondaryDiskSlot } from "../colo/secondary.js";
import type { ForwardedDisk } from "../colo/disk-forwarder.js";
import { hashBackendSync } from "../colo/disk/image-hash.js";
import { DEFAULT_MAX_CHECKPOINT_INTERVAL_MS, DEFAULT_MIN_CHECKPOINT_GAP_MS } from "../colo/checkpoint-policy.js";
import { DEFAULT_COMPARATOR_OPTIONS, DEFAULT_COMPARE_TIMEOUT_MS } from "../colo/net/comparator.js";
import type { BlockBackend } from "../engine/engine.js";
import { dirname, join } from "node:path";
import { currentNetnsName, runDir, vmRunFiles } from "./paths.js";
import { isDaemonAlive, removeStale } from "./registry.js";
import { readRecord, writeRecord } from "./vm-record.js";
import type { ControlRequest } from "./protocol.js";
import type { GuestStop } from "../vm/guest-stop.js";
import { planGuestStop, type DaemonRole } from "./guest-stop-plan.js";

function report(msg: DaemonReport): void {
  if (process.send && process.connected) process.send(msg);
}

/** How the daemon gets its VM. */
export type DaemonMode =
  | { kind: "boot"; configPath: string }
  | { kind: "restore"; file: string }
  | { kind: "incoming"; listen: Endpoint; keyFile: string; timeoutMs: number; colo?: { timeoutMs: number; heartbeatMs: number; arbiter?: Endpoint; leaseMs?: number } };

/**
 * The per-VM daemon process (`colo create`, `colo restore` and
 * `colo migrate-receive` spawn it; one process per VM, like one QEMU per
 * VM). Owns the VM and its control socket; removes its run files on every
 * exit it controls.
 */
export class VmDaemon implements ControlHandler {
  private vm: Vm | undefined;
  private source: ConfigSource | undefined;
  private server: ControlServer | undefined;
  private exiting = false;
  private busy: string | undefined;
  private primary: PrimaryReplicator | undefined;
  private secondary: SecondaryReplicator | undefined;
  private readonly consoles = new Set<Socket>();
  /** Ends when the running exclusive operation (save, migrate, ...) does. */
  private busyDone: Promise<unknown> | undefined;
  /** Guest stops are acted on one at a time, in order. */
  private stopChain: Promise<void> = Promise.resolve();
  /** A secondary's replica stopped and was left so (the checkpoint after it replaces it): which checkpoint it followed. */
  private ignoredStop: { stop: GuestStop; applied: number } | undefined;

  constructor(private readonly log: Logger) {}

  /** Claims the VM's name on this host: run files, control socket. */
  private async register(config: VmConfig, vmOptions: { deferBridge?: boolean } = {}): Promise<void> {
    const dir = runDir();
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const files = vmRunFiles(config.name, dir);
    const existing = readRecord(files.record);
    if (existing && existing.pid !== process.pid && isDaemonAlive(existing.pid)) {
      throw new Error(`a VM named ${config.name} is already running on this host (pid ${existing.pid})`);
    }
    removeStale(config.name, dir);
    this.vm = new Vm(config, vmOptions);
    this.vm.onGuestStop((stop) => this.guestStopped(stop));
    this.server = await ControlServer.listen(files.socket, this);
    writeRecord(files.record, {
      name: config.name,
      pid: process.pid,
      config: config.source,
      startedAt: new Date().toISOString(),
      ...(process.env.COLO_NETNS ? { netns: process.env.COLO_NETNS } : {}),
    });
  }

  async run(mode: DaemonMode): Promise<void> {
    switch (mode.kind) {
      case "boot":
        return this.boot(mode.configPath);
      case "restore":
        return this.restore(mode.file);
      case "incoming":
        return mode.colo ? this.incomingSecondary(mode.listen, mode.keyFile, mode.timeoutMs, mode.colo) : this.incoming(mode.listen, mode.keyFile, mode.timeoutMs);
    }
  }

  private async boot(configPath: string): Promise<void> {
    let text: string;
    try {
      text = await readFile(configPath, "utf8");
    } catch (err) {
      throw new Error(`cannot read ${configPath}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const config = parseVmConfig(text, configPath);
    this.source = { path: configPath, text };
    await this.register(config);
    const vm = this.requireVm();
    this.log.info({ config: config.source }, "starting VM");
    const t0 = Date.now();
    const ready = vm.console.waitForLine(GUEST_READY_MARKER);
    const failed = vm.console.waitForLine(GUEST_FAILED_MARKER);
    await vm.start();
    this.log.info({ status: vm.status() }, "engine started, waiting for the guest");
    const outcome = await Promise.race([
      ready.promise.then((line) => ({ ok: true as const, line })),
      failed.promise.then((line) => ({ ok: false as const, line })),
    ]);
    ready.cancel();
    failed.cancel();
    if (!outcome.ok) throw new Error(`guest reported failure: ${outcome.line.trim()}`);
    const bootMs = Date.now() - t0;
    this.log.info({ bootMs, line: outcome.line.trim() }, "guest ready");
    report({ type: "ready", line: outcome.line.trim(), bootMs });
  }

  private async restore(file: string): Promise<void> {
    const t0 = Date.now();
    let opened: { reader: import("../state/index.js").StreamReader; file: Readable } | undefined;
    try {
      opened = openSaveFile(file);
      const { config, source } = await readConfig(opened.reader, file);
      this.source = source;
      await this.register(config);
      const reader = opened.reader;
      await this.requireVm().start({
        incoming: async (engine) => {
          const r = await readMachine(engine, reader);
          this.log.info({ file, pages: r.pages, zeroPages: r.zeroPages, ms: r.totalMs }, "restored");
        },
      });
    } finally {
      opened?.file.destroy();
    }
    report({ type: "ready", line: `restored from ${file}`, bootMs: Date.now() - t0 });
  }

  private async incoming(listen: Endpoint, keyFile: string, timeoutMs: number): Promise<void> {
    const key = loadKey(keyFile);
    const inc: Incoming = await acceptIncoming(listen, key, timeoutMs, (address) => {
      this.log.info({ address }, "waiting for a migration");
      report({ type: "listening", host: address.host, port: address.port });
    });
    this.log.info({ from: inc.peer, vm: inc.config.name }, "incoming migration");
    const t0 = Date.now();
    try {
      this.source = inc.source;
      await this.register(inc.config);
      let loadedAt = 0;
      await this.requireVm().start({
        incoming: async (engine) => {
          const r = await readMachine(engine, inc.reader, (p) => report({ type: "progress", progress: p }));
          loadedAt = Date.now();
          this.log.info({ rounds: r.rounds, pages: r.pages, zeroPages: r.zeroPages, finalPhaseMs: r.finalPhaseMs }, "machine received");
        },
      });
      await inc.answer({ ok: true, resumeMs: Date.now() - loadedAt });
    } catch (err) {
      await inc.answer({ ok: false, error: (err as Error).message });
      inc.socket.end();
      throw err;
    }
    inc.socket.end();
    report({ type: "ready", line: `migrated in from ${inc.peer}`, bootMs: Date.now() - t0 });
  }

  /** `colo migrate-receive --colo`: become the secondary of a replication session. */
  private async incomingSecondary(
    listen: Endpoint,
    keyFile: string,
    acceptTimeoutMs: number,
    colo: { timeoutMs: number; heartbeatMs: number; arbiter?: Endpoint; leaseMs?: number },
  ): Promise<void> {
    const { timeoutMs, heartbeatMs } = colo;
    const key = loadKey(keyFile);
    const inc: Incoming = await acceptIncoming(listen, key, acceptTimeoutMs, (address) => {
      this.log.info({ address }, "waiting for a primary");
      report({ type: "listening", host: address.host, port: address.port });
    });
    this.log.info({ from: inc.peer, vm: inc.config.name }, "replication from a primary");
    const t0 = Date.now();
    this.source = inc.source;
    await this.register(inc.config, { deferBridge: true });
    const vm = this.requireVm();
    let secondary: SecondaryReplicator | undefined;
    await vm.start({
      stayPaused: true,
      incoming: async (engine) => {
        secondary = new SecondaryReplicator(
          {
            engine,
            disks: this.secondaryDiskSlots(vm),
            pause: () => vm.pause(),
            resume: () => vm.unpause(),
            setOutputFilter: (f) => vm.setOutputFilter(f),
            setInputFilter: (f) => vm.setInputFilter(f),
            deliverInput: (f) => vm.deliverInput(f),
            sendOutput: (f) => vm.sendOutput(f),
            takeOver: async () => {
              vm.joinBridge();
              await vm.unpause();
              vm.announce();
              this.actOnStopLeftByReplica();
            },
            discard: () => this.shutdown(0, "the primary ended replication"),
          },
          inc.socket,
          inc.reader,
          inc.peer,
          {
            timeoutMs,
            heartbeatMs,
            log: (msg, fields) => this.log.warn(fields ?? {}, msg),
            ...(colo.arbiter ? { arbiter: this.arbiterFor(colo.arbiter, key, inc.config.name, colo.leaseMs) } : {}),
          },
        );
        await secondary.receiveInitial();
      },
    });
    if (!secondary) throw new Error("internal: the secondary was not set up");
    this.secondary = secondary;
    // A takeover that fails (the engine cannot load the last checkpoint, the VM cannot take over) leaves no VM to run: say so and end.
    secondary.run().catch((err: unknown) => {
      this.log.error({ error: (err as Error).message }, "takeover failed; this host has no copy it can run");
      void this.shutdown(1, `takeover failed: ${(err as Error).message}`);
    });
    report({ type: "ready", line: `secondary of ${inc.peer} (${secondary.mode} mode): holds checkpoint 0`, bootMs: Date.now() - t0 });
  }

  /** The secondary's writable disks, with where their overlays spill (active-disk's folder, else the run dir). */
  private secondaryDiskSlots(vm: Vm): SecondaryDiskSlot[] {
    const slots = vm.diskSlots();
    return vm.config.disks.flatMap((d, index) => {
      const slot = slots[index];
      if (!slot || d.access !== "rw") return [];
      const spillDir = d.colo ? dirname(d.colo.activeDisk) : join(runDir(), `${vm.name}.disk${index}`);
      mkdirSync(spillDir, { recursive: true, mode: 0o700 });
      return [{ index, raw: slot.raw, spillDir, interpose: (layer: BlockBackend) => slot.interpose(layer) }];
    });
  }

  private requireVm(): Vm {
    if (!this.vm) throw new Error("VM not created yet");
    return this.vm;
  }

  async handle(request: Exclude<ControlRequest, { op: "console" }>, emit: (event: unknown) => void): Promise<unknown> {
    const vm = this.requireVm();
    if (this.busy && request.op !== "status" && request.op !== "console-tail") {
      throw new Error(`${vm.name} is busy (${this.busy}); try again when it is done`);
    }
    switch (request.op) {
      case "status": {
        const replication = this.primary?.stats.snapshot() ?? this.secondary?.stats.snapshot();
        const active = this.primary && this.primary.stats.mode === "primary" ? this.primary : undefined;
        const output = active?.output.stats();
        const details = active?.details() ?? (this.secondary && !this.secondary.done ? this.secondary.details() : undefined);
        return {
          ...vm.status(),
          pid: process.pid,
          ...(this.busy ? { busy: this.busy } : {}),
          ...(replication ? { replication } : {}),
          ...(output ? { heldOutput: output } : {}),
          ...(details ? { proxy: details } : {}),
        };
      }
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
      case "remus":
        return this.exclusive("starting replication", () => this.startReplication(request));
      case "pause":
        await vm.pause();
        this.log.info("paused");
        return { state: vm.state };
      case "unpause":
        await vm.unpause();
        this.log.info("unpaused");
        return { state: vm.state };
      case "destroy":
        // Answer first, then go away.
        setImmediate(() => void this.shutdown(0, "destroy requested"));
        return { state: "destroying" };
      case "console-tail":
        return { text: vm.console.tailText(request.bytes ?? 4096) };
      case "save":
        return this.exclusive("saving", () => this.save(request.path, request.keepRunning === true));
      case "migrate":
        return this.exclusive("migrating", () => this.migrate(request.host, request.port, request.keyFile, request.configPath, emit));
    }
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

  /** The guest stopped (poweroff, reboot) or its engine failed: acted on in order, each after any exclusive operation. */
  private guestStopped(stop: GuestStop): void {
    this.stopChain = this.stopChain
      .then(() => this.actOnStop(stop))
      .catch((err: unknown) => {
        this.log.error({ err }, "acting on the guest's stop failed");
        void this.shutdown(1, `acting on the guest's stop failed: ${(err as Error).message}`);
      });
  }

  private role(): DaemonRole {
    if (this.primary && this.primary.stats.mode === "primary") return "primary";
    if (this.secondary && !this.secondary.done) return "secondary";
    return "unprotected";
  }

  /** on_poweroff / on_reboot / on_crash (guest-stop-plan.ts says what, for this daemon's role). */
  private async actOnStop(stop: GuestStop): Promise<void> {
    while (this.busyDone) await this.busyDone.catch(() => undefined);
    const vm = this.vm;
    if (this.exiting || !vm || vm.state === "destroyed") return;
    const plan = planGuestStop(vm.config, stop, this.role());
    if (plan.action === "ignore") {
      if (this.secondary) this.ignoredStop = { stop, applied: this.secondary.applied };
      this.log.warn({ stop }, plan.reason);
      return;
    }
    this.log.warn({ stop, action: plan.action }, plan.reason);
    if (plan.action === "destroy") return this.shutdown(plan.exitCode, plan.reason, { handOver: plan.handOver === true });
    if (plan.endReplication) await this.endReplication(plan.reason);
    if (plan.action === "preserve") {
      await vm.pause();
      this.log.warn({ stop }, "preserved: the VM stays paused until `colo destroy`");
      return;
    }
    await this.exclusive("restarting the guest", () => vm.restart());
    this.log.info({ status: vm.status() }, "guest restarted");
  }

  /** A replicating primary's guest stopped: the secondary discards its copy (no takeover of a stopped guest); waits until this side runs alone. */
  private async endReplication(reason: string): Promise<void> {
    const primary = this.primary;
    if (!primary || primary.stats.mode !== "primary") return;
    await primary.stop(reason);
    await primary.done;
  }

  /** A survivor whose replica had stopped after the last checkpoint it applied: that stop is the VM's now. */
  private actOnStopLeftByReplica(): void {
    const left = this.ignoredStop;
    this.ignoredStop = undefined;
    if (!left || !this.secondary || left.applied !== this.secondary.applied) return;
    this.log.warn({ stop: left.stop }, "the guest had stopped since the last checkpoint: acting on it now");
    this.guestStopped(left.stop);
  }

  private async save(path: string, keepRunning: boolean): Promise<unknown> {
    const vm = this.requireVm();
    const source = this.requireSource();
    const wasRunning = vm.state === "running";
    await vm.pause();
    const t0 = Date.now();
    try {
      const r = await saveToFile(vm.machine, path, source);
      this.log.info({ path, bytes: r.bytes, pages: r.pages, zeroPages: r.zeroPages, ms: Date.now() - t0 }, "saved");
      if (keepRunning) {
        if (wasRunning) await vm.unpause();
      } else {
        setImmediate(() => void this.shutdown(0, `saved to ${path}`));
      }
      return { path, bytes: r.bytes, pages: r.pages, zeroPages: r.zeroPages, ms: Date.now() - t0, destroyed: !keepRunning };
    } catch (err) {
      if (wasRunning) await vm.unpause();
      throw err;
    }
  }

  private async migrate(host: string, port: number, keyFile: string, configPath: string | undefined, emit: (event: unknown) => void): Promise<unknown> {
    const vm = this.requireVm();
    if (vm.state !== "running") throw new Error(`${vm.name} is ${vm.state}: only a running VM migrates live`);
    const key = loadKey(keyFile);
    let source = this.requireSource();
    if (configPath) source = { path: configPath, text: await readFile(configPath, "utf8") };
    this.log.info({ to: `${host}:${port}` }, "migrating out");
    try {
      const outcome = await migrateOut(vm.machine, source, { host, port }, key, () => vm.pause(), (p) => emit({ progress: p }));
      if (!outcome.answer.ok) throw new Error(`the destination refused the migration: ${outcome.answer.error}`);
      const result = {
        to: `${host}:${port}`,
        rounds: outcome.send.rounds,
        pages: outcome.send.pages,
        zeroPages: outcome.send.zeroPages,
        bytes: outcome.send.bytes,
        totalMs: outcome.send.totalMs,
        downtimeMs: outcome.downtimeMs,
        finalPages: outcome.send.finalPages,
      };
      this.log.info(result, "migrated; the destination runs the VM");
      setImmediate(() => void this.shutdown(0, `migrated to ${host}:${port}`));
      return result;
    } catch (err) {
      this.log.warn({ err }, "migration failed; resuming here");
      const state: string = vm.state; // changed by the pause inside migrateOut
      if (state === "paused") await vm.unpause();
      throw err;
    }
  }

  private async startReplication(r: Extract<ControlRequest, { op: "remus" }>): Promise<unknown> {
    const vm = this.requireVm();
    const mode = r.mode ?? "remus";
    if (vm.state !== "running") throw new Error(`${vm.name} is ${vm.state}: only a running VM can be protected`);
    if (this.primary && this.primary.stats.mode === "primary") throw new Error(`${vm.name} is already replicating to ${this.primary.stats.peer}`);
    const key = loadKey(r.keyFile);
    let source = this.requireSource();
    if (r.configPath) source = { path: r.configPath, text: await readFile(r.configPath, "utf8") };
    const socket = await connectSecure({ host: r.host, port: r.port }, key);
    // The previous session's (or the takeover's) lease keeper hands over to this session's.
    await this.primary?.stopLease();
    await this.secondary?.stopLease();
    const delay = Number(process.env.COLO_TEST_CHECKPOINT_DELAY_MS ?? "0");
    const primary = new PrimaryReplicator(
      {
        engine: vm.machine,
        pause: () => vm.pause(),
        resume: () => vm.unpause(),
        setOutputFilter: (f) => vm.setOutputFilter(f),
        setInputFilter: (f) => vm.setInputFilter(f),
        sendOutput: (f) => vm.sendOutput(f),
        disks: this.primaryDisks(vm),
      },
      socket,
      `${r.host}:${r.port}`,
      {
        mode,
        intervalMs: r.intervalMs,
        ...(mode === "compare"
          ? {
              compare: {
                ...DEFAULT_COMPARATOR_OPTIONS,
                compareTimeoutMs: r.compareTimeoutMs ?? DEFAULT_COMPARE_TIMEOUT_MS,
                minGapMs: r.minGapMs ?? DEFAULT_MIN_CHECKPOINT_GAP_MS,
                maxIntervalMs: r.maxIntervalMs ?? DEFAULT_MAX_CHECKPOINT_INTERVAL_MS,
              },
            }
          : {}),
        timeoutMs: r.timeoutMs,
        heartbeatMs: r.heartbeatMs,
        log: (msg, fields) => this.log.warn(fields ?? {}, msg),
        ...(delay > 0 ? { midCheckpointDelayMs: delay } : {}),
        ...(r.arbiter ? { arbiter: this.arbiterFor(parseEndpoint(r.arbiter, DEFAULT_ARBITER_PORT), key, vm.name, r.leaseMs) } : {}),
      },
    );
    this.primary = primary;
    try {
      await primary.start(source);
    } catch (err) {
      void primary.stop(`replication start failed: ${(err as Error).message}`);
      throw err;
    }
    this.log.info({ peer: `${r.host}:${r.port}`, mode, intervalMs: r.intervalMs }, "replication running");
    return { peer: `${r.host}:${r.port}`, mode, intervalMs: r.intervalMs, checkpoint0Pages: primary.stats.lastPages, disks: primary.diskCount };
  }

  /** The lease this side holds with the arbiter: one holder name per daemon. */
  private arbiterFor(at: Endpoint, key: Buffer, vmName: string, leaseMs: number | undefined): ArbiterOptions {
    return {
      arbiter: new ArbiterClient(at, key),
      vm: vmName,
      // One holder per daemon, whatever its role: a survivor that is protected again keeps its own lease.
      holder: `${currentNetnsName() ?? "host"}:${process.pid}`,
      ttlMs: leaseMs ?? DEFAULT_LEASE_TTL_MS,
    };
  }

  /** The primary's writable disks: every write is forwarded once replication starts. */
  private primaryDisks(vm: Vm): ForwardedDisk[] {
    const slots = vm.diskSlots();
    return vm.config.disks.flatMap((d, index) => {
      const slot = slots[index];
      if (!slot || d.access !== "rw") return [];
      return [
        {
          index,
          local: slot.raw,
          setWriteHook: (hook: ((offset: number, data: Uint8Array) => void) | undefined) => {
            slot.raw.onWrite = hook;
          },
        },
      ];
    });
  }

  private async failover(): Promise<unknown> {
    if (this.secondary && !this.secondary.done) {
      this.secondary.takeOverNow("operator failover");
      return { role: "secondary", action: "taking over" };
    }
    if (this.primary && this.primary.stats.mode === "primary") {
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
