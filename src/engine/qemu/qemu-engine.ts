/**
 * The `qemu` engine: QEMU as a plain device model (DESIGN.md §1). QEMU owns
 * the CPU and device state; we own the rest: guest RAM is a shared file we
 * map (ram() is a view of it; dirty pages come from the kernel's log of
 * QEMU's writes, qemu-write-log.ts, or else from a compare with a shadow
 * copy), every NIC frame crosses a stream socket to us, every disk
 * request is served by our NBD server from the VM's BlockBackend, and the
 * console is a socket to us.
 *
 * State without RAM: saveState() is `xen-save-devices-state` on the paused
 * QEMU; loadState() loads it with `migrate-incoming` (capability
 * x-ignore-shared) into a QEMU started with `-incoming defer` — the first
 * process when the engine was started paused (restore, incoming migration,
 * a secondary's first state), else a standby spawned beside the running
 * one, which then replaces it (a QEMU process takes one incoming
 * migration, and xen-load-devices-state aborts Debian's 7.2:
 * ENGINE-NOTES.md). The engine keeps two RAM files and alternates them
 * between the running process and the standby. Each RAM file is unlinked
 * as soon as we map it (QEMU opens it through /proc/<our pid>/fd/<fd>), so
 * its memory goes with the last process holding it: a SIGKILLed daemon
 * takes its QEMUs with it (setpriv --pdeathsig) and leaks no guest RAM.
 * What it does leave (its directory, with sockets) is swept by the next
 * engine's start (sweepStaleEngineDirs).
 */
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { getPriority } from "node:os";
import { join } from "node:path";
import { mapSharedFile, processEnded, type SharedMapping } from "../../sys/index.js";
import { ShadowDirtyTracker, touchPages, type PageTracker } from "../dirty-tracker.js";
import { WriteLogTracker } from "../write-log-tracker.js";
import { PAGE_SIZE, type Engine, type EngineEvent, type LoadStateOptions, type MachineSpec } from "../engine.js";
import { EngineError } from "../errors.js";
import { resolveAccel, type AccelChoice, type AccelRequest } from "./accel.js";
import { Generation, type GenerationConfig } from "./generation.js";
import { macText } from "./machine-options.js";
import { NbdServer } from "./nbd-server.js";
import { onQmpEvent } from "./qmp-events.js";
import { VcpuStopTimer } from "./vcpu-stop-timer.js";
import { openQemuWriteLog, writeLogEnv, writeLogPreload } from "./qemu-write-log.js";
import { decodeQemuState, encodeQemuState, QEMU_STATE_FORMAT_VERSION, type QemuStateHeader } from "./qemu-state.js";
import { QEMU_MACHINE_TYPE as MACHINE_TYPE, qemuCompatibility } from "./qemu-version.js";

/** Inbound frames held while paused or before QEMU's NIC socket is connected. */
const MAX_PENDING_RX_FRAMES = 1024;
/** A device-state load (migrate-incoming) that takes longer than this failed. */
const LOAD_TIMEOUT_MS = 30_000;
/** How much lower a standby QEMU's priority is than ours until it replaces the running one (nice steps). */
const STANDBY_NICE = 10;
/** Our own nice value: what a standby gets back when it becomes the running QEMU. */
const OWN_NICE = getPriority();
/** Standby spawn attempts before loadState() gives up. */
const STANDBY_ATTEMPTS = 3;
const EXPORT_NAME = "disk";

export interface QemuEngineOptions {
  /** The VM's name, for QEMU's process title, errors and logs. */
  vm?: string;
  /** `accel =` of the config (default auto). */
  accel?: AccelRequest;
  /** qemu-system-x86_64 unless given (a name on PATH or a path). */
  binary?: string;
  /** Where the engine's directory goes: RAM files must be on tmpfs (default /dev/shm). */
  stateDir?: string;
  /** Problems that do not stop the VM (a standby that failed to spawn and is retried). */
  log?: (line: string) => void;
  /** "auto" (default): the kernel's write log of QEMU's RAM when there is one; "shadow-compare": always the compare. */
  dirtyLog?: "auto" | "shadow-compare";
}

type Listener<T> = (value: T) => void;

/** Engine directories are named colo-<vm>-p<pid of the owning daemon>-<random>. */
const ENGINE_DIR_PATTERN = /^colo-.*-p(\d+)-[A-Za-z0-9]{6}$/;

/**
 * Removes the engine directories (RAM files, sockets) of daemons that died
 * without destroying their engine (SIGKILL): their QEMUs died with them
 * (setpriv --pdeathsig), their files did not. Returns what was removed.
 */
export async function sweepStaleEngineDirs(stateDir: string): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdir(stateDir).catch(() => [] as string[])) {
    const m = ENGINE_DIR_PATTERN.exec(name);
    if (m === null || !processEnded(Number(m[1]))) continue;
    await rm(join(stateDir, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

export class QemuEngine implements Engine {
  readonly id = "qemu" as const;
  readonly stateFormatVersion = QEMU_STATE_FORMAT_VERSION;
  readonly memoryBytes: number;
  readonly pageCount: number;

  private readonly vm: string;
  /** Chosen by start() once the first QEMU runs: the write log when it opened there, else the shadow compare. */
  private tracker: PageTracker | undefined;
  /** QEMU's environment with the write log's preload library (undefined: the shadow compare, no preload). */
  private writeLogEnv: NodeJS.ProcessEnv | undefined;
  dirtyLog: { name: "write-log" | "shadow-compare"; why: string } | undefined;
  private accelChoice: AccelChoice | undefined;
  private dir: string | undefined;
  private ramFiles: SharedMapping[] = [];
  private nbd: NbdServer[] = [];
  private current: Generation | undefined;
  /** The current generation was started -incoming and has not loaded a state yet. */
  private awaitingLoad = false;
  private standby: Promise<Generation> | undefined;
  private nextIndex = 0;
  private isRunning = false;
  /** Pages the last load copied into the standby's RAM file (all of RAM, or only those that may differ). */
  lastLoadPagesCopied = 0;
  /**
   * Pages where the standby's RAM file may differ from the running QEMU's.
   * After a swap the retired file (the next standby's) equals the new
   * current one, except where the caller wrote pages it named
   * (changedPages) that the tracker has not taken yet; from then on every
   * page the tracker reports, or a load names, is added. A load then copies
   * only these into the standby instead of all of RAM. "all": not known
   * (a fresh file, a load that named no pages, the guest ran since the
   * tracker's last look).
   */
  private standbyDiverged: Set<number> | "all" = "all";
  /** The vCPUs' own stop, from QEMU's STOP and RESUME events (lastStoppedMs). */
  private readonly stopTimer = new VcpuStopTimer<Generation>();
  /** The guest may have written RAM since the last takeDirtyPages(). */
  private ranSinceTake = false;
  private destroyed = false;
  private heldRx: Uint8Array[] = [];
  private readonly txListeners: Listener<Uint8Array>[] = [];
  private readonly consoleListeners: Listener<Uint8Array>[] = [];
  private readonly eventListeners: Listener<EngineEvent>[] = [];
  private cfg: GenerationConfig | undefined;
  /** The shadow's and the RAM files' first touch, in slices (see touchPages). */
  private prefaulting: Promise<void> = Promise.resolve();
  private qemuVersion = "";

  constructor(
    private readonly spec: MachineSpec,
    private readonly opts: QemuEngineOptions = {},
  ) {
    this.vm = opts.vm ?? "guest";
    if (spec.memoryBytes % 2 ** 20 !== 0) throw new EngineError("qemu", "BAD_SPEC", `memory ${spec.memoryBytes} bytes is not a whole number of MiB`);
    if (spec.kernelFormat === "multiboot") throw new EngineError("qemu", "BAD_SPEC", "the qemu engine boots Linux kernels (bzImage or vmlinux), not Multiboot images");
    this.memoryBytes = spec.memoryBytes;
    this.pageCount = spec.memoryBytes / PAGE_SIZE;
  }

  private pages(): PageTracker {
    if (this.tracker === undefined) throw this.fail("NOT_STARTED", "not started");
    return this.tracker;
  }

  /** The accelerator QEMU runs with and why (after start()). */
  get accel(): AccelChoice | undefined {
    return this.accelChoice;
  }

  get accelerator(): { name: string; why: string } | undefined {
    return this.accelChoice === undefined ? undefined : { name: this.accelChoice.accel, why: this.accelChoice.why };
  }

  get processId(): number | undefined {
    return this.current?.process.pid;
  }

  get running(): boolean {
    return this.isRunning;
  }

  /**
   * "qemu 7.2.22 pc": QEMU's version (from the QMP greeting of the process
   * start() spawned) and the machine type, what loadState() requires of a
   * state's header besides the RAM size. Undefined until start() has
   * spawned QEMU.
   */
  get compatibility(): string | undefined {
    return this.qemuVersion === "" ? undefined : qemuCompatibility(this.qemuVersion);
  }

  private fail(code: "NOT_STARTED" | "NOT_PAUSED" | "BAD_STATE" | "DESTROYED" | "FAULT", message: string): EngineError {
    return new EngineError("qemu", code, `${this.vm}: ${message}`);
  }

  private live(): Generation {
    if (this.destroyed) throw this.fail("DESTROYED", "the engine was destroyed");
    if (this.current === undefined) throw this.fail("NOT_STARTED", "not started");
    return this.current;
  }

  async start(opts: { paused?: boolean } = {}): Promise<void> {
    if (this.current !== undefined || this.destroyed) throw this.fail("NOT_STARTED", "start() may be called once");
    this.accelChoice = resolveAccel(this.opts.accel ?? "auto");
    const stateDir = this.opts.stateDir ?? "/dev/shm";
    for (const name of await sweepStaleEngineDirs(stateDir)) this.opts.log?.(`qemu ${this.vm}: removed ${join(stateDir, name)}, left by a daemon that died`);
    const dir = await mkdtemp(join(stateDir, `colo-${this.vm.replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 24)}-p${process.pid}-`));
    this.dir = dir;
    try {
      const kernelFile = join(dir, "kernel");
      await writeFile(kernelFile, this.spec.kernel, { mode: 0o600 });
      let initrdFile: string | undefined;
      if (this.spec.initrd !== undefined) {
        initrdFile = join(dir, "initrd");
        await writeFile(initrdFile, this.spec.initrd, { mode: 0o600 });
      }
      for (const [i, backend] of this.spec.disks.entries()) {
        this.nbd.push(await NbdServer.listen({ socketPath: join(dir, `disk-${i}.sock`), backend, exportName: EXPORT_NAME }));
      }
      const ram0 = mapSharedFile(join(dir, "ram-0"), this.memoryBytes, { create: true, anonymous: true });
      this.ramFiles.push(ram0);
      // Page faults cost ~4 us each here: take them now, a slice at a time, not in a checkpoint.
      this.prefaulting = touchPages(ram0.bytes, "read");
      const preload = this.opts.dirtyLog === "shadow-compare" ? { unavailable: "asked for (dirtyLog: shadow-compare)" } : writeLogPreload();
      if ("path" in preload) this.writeLogEnv = writeLogEnv(preload.path);
      this.cfg = {
        vm: this.vm,
        dir,
        memoryBytes: this.memoryBytes,
        cmdline: this.spec.cmdline,
        kernelFile,
        ...(initrdFile !== undefined ? { initrdFile } : {}),
        ...(this.spec.nicMac !== undefined ? { mac: macText(this.spec.nicMac) } : {}),
        diskSockets: this.nbd.map((s) => s.socketPath),
        exportName: EXPORT_NAME,
        accel: this.accelChoice.accel,
        ...(this.opts.binary !== undefined ? { binary: this.opts.binary } : {}),
      };
      const paused = opts.paused === true;
      this.current = await this.spawn(this.ramFiles[0] as SharedMapping, paused, "first");
      const log = this.current.writeLog;
      if (log !== undefined) {
        this.tracker = WriteLogTracker.over(this.memoryBytes, log);
        this.dirtyLog = { name: "write-log", why: "userfaultfd write-protect (async) of QEMU's RAM mapping + PAGEMAP_SCAN (preload library in QEMU)" };
      } else {
        const shadow = new ShadowDirtyTracker(this.memoryBytes);
        this.tracker = shadow;
        this.dirtyLog = { name: "shadow-compare", why: `no kernel write log: ${this.noLogWhy ?? ("unavailable" in preload ? preload.unavailable : "unknown")}` };
        this.prefaulting = Promise.all([this.prefaulting, shadow.prefault()]).then(() => undefined);
      }
      this.awaitingLoad = paused;
      const v = this.current.process.version;
      this.qemuVersion = `${v.major}.${v.minor}.${v.micro}`;
      if (!paused) await this.resume();
    } catch (e) {
      await this.destroy();
      throw e;
    }
  }

  /** Why the first QEMU gave no write log (then every QEMU runs without the preload library). */
  private noLogWhy: string | undefined;

  /**
   * A new QEMU on `ram`. With the write log, its log is opened before the
   * guest runs there: failing that, the first QEMU falls back to the
   * compare (`first`), a later one is refused (the tracker already follows
   * logs: a compare cannot start from the middle).
   */
  private async spawn(ram: SharedMapping, incoming: boolean, which: "first" | "standby" = "standby"): Promise<Generation> {
    const base = this.cfg;
    if (base === undefined) throw this.fail("NOT_STARTED", "not started");
    const env = this.writeLogEnv;
    // A standby starts while the guest runs (and checkpoints) beside it: at a lower priority until it takes over.
    const cfg: GenerationConfig = { ...base, ...(env !== undefined ? { env } : {}), ...(which === "standby" ? { nice: Math.min(19, OWN_NICE + STANDBY_NICE) } : {}) };
    const index = this.nextIndex++;
    let g: Generation | undefined;
    g = await Generation.start(index, ram, incoming, cfg, {
      onFrame: (f) => {
        if (g !== undefined && g === this.current) for (const l of this.txListeners) l(f);
      },
      onConsole: (b) => {
        if (g !== undefined && g === this.current) for (const l of this.consoleListeners) l(b);
      },
      onProblem: (m) => this.opts.log?.(`qemu ${this.vm}: ${m}`),
    });
    const gen = g;
    if (env !== undefined) {
      const pid = gen.process.pid;
      const log = pid === undefined ? { unavailable: "QEMU has no pid" } : openQemuWriteLog(pid, ram);
      if ("unavailable" in log) {
        if (which === "standby") {
          await gen.retire("kill");
          throw this.fail("FAULT", `the standby QEMU gave no write log of guest RAM: ${log.unavailable}`);
        }
        this.noLogWhy = log.unavailable;
        this.writeLogEnv = undefined;
      } else {
        gen.writeLog = log;
      }
    }
    onQmpEvent(gen.process.qmp, "SHUTDOWN", (data) => {
      if (gen !== this.current || typeof data === "string" || !data.guest) return;
      this.isRunning = false;
      this.emit(data.reason === "guest-reset" ? { kind: "reboot" } : { kind: "poweroff" });
    });
    onQmpEvent(gen.process.qmp, "STOP", (_data, event) => {
      if (gen === this.current) this.stopTimer.stopped(gen, event);
    });
    onQmpEvent(gen.process.qmp, "RESUME", (_data, event) => {
      if (gen === this.current) this.stopTimer.resumed(gen, event);
    });
    onQmpEvent(gen.process.qmp, "GUEST_PANICKED", () => {
      if (gen !== this.current) return;
      this.isRunning = false;
      this.emit({ kind: "fault", message: "the guest kernel panicked (GUEST_PANICKED)" });
    });
    void gen.exited.then((exit) => {
      if (this.destroyed || exit.cause === "stopped") return;
      if (gen === this.current) {
        this.isRunning = false;
        this.emit({ kind: "fault", message: `QEMU (pid ${exit.pid ?? "?"}) ended under the VM: ${exit.signal ?? `exit code ${exit.code}`}${exit.outputTail ? `: ${exit.outputTail}` : ""}` });
      } else {
        this.opts.log?.(`qemu ${this.vm}: the standby QEMU (pid ${exit.pid ?? "?"}) ended (${exit.signal ?? exit.code}); another is spawned when needed`);
        this.standby = undefined;
      }
    });
    return gen;
  }

  private emit(event: EngineEvent): void {
    for (const l of this.eventListeners) l(event);
  }

  async pause(): Promise<void> {
    const g = this.live();
    this.stopTimer.pausing();
    if (!this.isRunning) return;
    // Hold frames from here on: one QEMU reads after `stop` sits in QEMU's own queue, where pendingRx() cannot see it.
    this.isRunning = false;
    try {
      await g.process.commands.stop();
    } catch (e) {
      this.isRunning = true;
      throw e;
    }
  }

  async resume(): Promise<void> {
    const g = this.live();
    if (this.isRunning) return;
    if (this.awaitingLoad) throw this.fail("BAD_STATE", "started paused for a state load; loadState() first");
    await g.process.commands.cont();
    this.isRunning = true;
    this.ranSinceTake = true;
    const held = this.heldRx;
    this.heldRx = [];
    for (const f of held) this.deliver(f);
  }

  lastStoppedMs(): number | undefined {
    return this.stopTimer.lastMs();
  }

  ram(): Uint8Array {
    return this.live().ram.bytes;
  }

  takeDirtyPages(): Uint32Array {
    const pfns = this.pages().take(this.ram());
    this.diverged(pfns);
    this.ranSinceTake = this.isRunning;
    return pfns;
  }

  markDirty(pfn: number): void {
    this.pages().markDirty(pfn);
    this.diverged([pfn]);
  }

  pagesCopied(pfns: ArrayLike<number>, sent?: Uint8Array): void {
    this.pages().copied(this.ram(), pfns, sent);
    this.diverged(pfns);
  }

  private diverged(pfns: ArrayLike<number>): void {
    const d = this.standbyDiverged;
    if (d === "all") return;
    for (let i = 0; i < pfns.length; i++) d.add(pfns[i] as number);
  }

  /**
   * Makes the standby's RAM file equal to the running one: the pages that
   * may differ, or all of RAM when that is not known. Returns the pages
   * copied.
   */
  private syncStandbyRam(target: Generation, current: Generation, changed: ArrayLike<number> | undefined): number {
    const from = current.ram.bytes;
    const to = target.ram.bytes;
    const d = this.standbyDiverged;
    if (d === "all" || changed === undefined || this.ranSinceTake) {
      to.set(from);
      return this.pageCount;
    }
    for (let i = 0; i < changed.length; i++) d.add(changed[i] as number);
    for (const pfn of d) {
      if (!Number.isInteger(pfn) || pfn < 0 || pfn >= this.pageCount) throw this.fail("BAD_STATE", `changed page ${pfn} outside guest RAM (${this.pageCount} pages)`);
      const at = pfn * PAGE_SIZE;
      to.set(from.subarray(at, at + PAGE_SIZE), at);
    }
    return d.size;
  }

  private header(): QemuStateHeader {
    return { qemuVersion: this.qemuVersion, machine: MACHINE_TYPE, memoryBytes: this.memoryBytes };
  }

  async saveState(): Promise<Uint8Array> {
    const g = this.live();
    if (this.isRunning) throw this.fail("NOT_PAUSED", "saveState() needs a paused machine");
    const file = join(this.cfg?.dir ?? "", "state-out");
    await g.process.commands.xenSaveDevicesState(file);
    // Synchronous: a ~100 KiB file on tmpfs reads in tens of microseconds, and the guest is paused meanwhile;
    // a trip through the thread pool, which may queue it behind other work, is not.
    const devices = readFileSync(file);
    rmSync(file, { force: true });
    return encodeQemuState(this.header(), devices);
  }

  async loadState(state: Uint8Array, opts: LoadStateOptions = {}): Promise<void> {
    const current = this.live();
    if (this.isRunning) throw this.fail("NOT_PAUSED", "loadState() needs a paused machine");
    const { header, devices } = decodeQemuState(state, `state for ${this.vm}`);
    const mine = this.header();
    if (header.qemuVersion !== mine.qemuVersion || header.machine !== mine.machine || header.memoryBytes !== mine.memoryBytes) {
      throw this.fail(
        "BAD_STATE",
        `state from QEMU ${header.qemuVersion} machine ${header.machine} (${header.memoryBytes} bytes of RAM); this engine runs QEMU ${mine.qemuVersion} machine ${mine.machine} (${mine.memoryBytes} bytes)`,
      );
    }
    const target = this.awaitingLoad ? current : await this.takeStandby();
    // Guest writes since the tracker's last look: not in standbyDiverged, and the tracker's copy is behind RAM there.
    const ranSinceTake = this.ranSinceTake;
    if (target !== current) this.lastLoadPagesCopied = this.syncStandbyRam(target, current, opts.changedPages);
    await this.migrateIncoming(target, devices);
    this.heldRx = [];
    this.awaitingLoad = false;
    // The write log: from now on the guest's writes are the target QEMU's (what the old one logged and no take
    // listed yet is kept). Our own copies into its RAM file above are in no log, as they should not be.
    const tracker = this.pages();
    if (target !== current && tracker instanceof WriteLogTracker) {
      if (target.writeLog === undefined) throw this.fail("BAD_STATE", "the standby QEMU has no write log");
      tracker.switchTo(target.writeLog);
    }
    // A whole machine replaced (restore, migration, checkpoint 0): its RAM is
    // what the caller wrote, and the caller counts from here. One copy into
    // the shadow instead of a page-by-page compare of all of RAM at the next
    // takeDirtyPages() (measured: 1.8 s for 256 MiB, too long for the event
    // loop that carries the heartbeats).
    if (opts.changedPages === undefined) tracker.resync(target.ram.bytes);
    if (target === current) {
      // The first state is in: get the standby ready before the next load needs it (on a fresh file).
      this.standbyDiverged = "all";
      this.standby ??= this.backgroundStandby(this.prefaulting.then(() => this.spawnStandby()));
    } else {
      this.current = target;
      target.process.setNice(OWN_NICE);
      // The retired file, the next standby's, equals this one. The tracker's copy may still lag behind it where the
      // caller wrote pages (changedPages) or, when the guest ran since the last take, anywhere: a later write back to
      // the copy's bytes would not be reported, so those pages count as diverged from the start.
      this.standbyDiverged = ranSinceTake ? "all" : new Set(opts.changedPages === undefined ? [] : Array.from(opts.changedPages, Number));
      // The next standby takes the retired process's RAM file once that process is gone.
      this.standby = this.backgroundStandby(current.retire("kill").then(() => this.spawnStandby()));
    }
  }

  /** The standby generation, spawned now if none is ready (retried STANDBY_ATTEMPTS times). */
  private async takeStandby(): Promise<Generation> {
    let lastError: unknown;
    for (let attempt = 1; attempt <= STANDBY_ATTEMPTS; attempt++) {
      const pending = this.standby ?? this.spawnStandby();
      this.standby = undefined;
      try {
        return await pending;
      } catch (e) {
        lastError = e;
        this.opts.log?.(`qemu ${this.vm}: standby QEMU failed to start (attempt ${attempt} of ${STANDBY_ATTEMPTS}): ${(e as Error).message}`);
      }
    }
    throw this.fail("FAULT", `no standby QEMU after ${STANDBY_ATTEMPTS} attempts: ${(lastError as Error).message}`);
  }

  /** A standby spawned in the background: its failure is logged here and retried by the next load. */
  private backgroundStandby(p: Promise<Generation>): Promise<Generation> {
    p.catch((e: unknown) => this.opts.log?.(`qemu ${this.vm}: the next standby QEMU failed to start (retried at the next load): ${(e as Error).message}`));
    return p;
  }

  private async spawnStandby(): Promise<Generation> {
    const cur = this.live();
    let ram = this.ramFiles.find((m) => m !== cur.ram);
    if (ram === undefined) {
      ram = mapSharedFile(join(this.cfg?.dir ?? "", `ram-${this.ramFiles.length}`), this.memoryBytes, { create: true, anonymous: true });
      this.ramFiles.push(ram);
      // Its first copy would fault every page in one go (1.1 s for 256 MiB): in slices now, nobody uses it yet.
      await touchPages(ram.bytes, "write");
    }
    return this.spawn(ram, true);
  }

  private async migrateIncoming(target: Generation, devices: Uint8Array): Promise<void> {
    const file = join(this.cfg?.dir ?? "", `state-in-${target.index}`);
    writeFileSync(file, devices, { mode: 0o600 }); // tmpfs, paused guest: as in saveState()
    const cmds = target.process.commands;
    try {
      // events: MIGRATION events are sent only with this capability on (qapi/migration.json).
      await cmds.migrateSetCapabilities([
        { capability: "x-ignore-shared", state: true },
        { capability: "events", state: true },
      ]);
      const done = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(this.fail("BAD_STATE", `loading the device state did not complete in ${LOAD_TIMEOUT_MS} ms`)), LOAD_TIMEOUT_MS);
        const off = onQmpEvent(target.process.qmp, "MIGRATION", (data) => {
          if (typeof data === "string") return;
          if (data.status === "completed") {
            clearTimeout(timer);
            off();
            resolve();
          } else if (data.status === "failed" || data.status === "cancelled") {
            clearTimeout(timer);
            off();
            reject(this.fail("BAD_STATE", `QEMU refused the device state (${data.status}): ${target.process.outputTail(5)}`));
          }
        });
      });
      await cmds.migrateIncoming(`exec:cat ${file}`);
      await done;
    } finally {
      await rm(file, { force: true });
    }
  }

  onTransmit(listener: (frame: Uint8Array) => void): void {
    this.txListeners.push(listener);
  }

  deliver(frame: Uint8Array): void {
    const netdev = this.current?.netdev;
    if (!this.isRunning || netdev === undefined || !netdev.connected) {
      if (this.heldRx.length >= MAX_PENDING_RX_FRAMES) this.heldRx.shift();
      this.heldRx.push(frame.slice());
      return;
    }
    netdev.send(frame);
  }

  pendingRx(): Uint8Array[] {
    // Frames QEMU has not read from its stream yet (older), then those we hold.
    const unread = this.current?.netdev?.unread() ?? [];
    return [...unread, ...this.heldRx.map((f) => f.slice())];
  }

  onConsoleOutput(listener: (bytes: Uint8Array) => void): void {
    this.consoleListeners.push(listener);
  }

  sendConsoleInput(bytes: Uint8Array): void {
    this.current?.console.send(bytes);
  }

  onEvent(listener: (event: EngineEvent) => void): void {
    this.eventListeners.push(listener);
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    this.isRunning = false;
    const gens: Generation[] = [];
    if (this.current !== undefined) gens.push(this.current);
    const standby = this.standby;
    this.standby = undefined;
    if (standby !== undefined) {
      const g = await standby.catch(() => undefined);
      if (g !== undefined) gens.push(g);
    }
    await Promise.all(gens.map((g) => g.retire("kill")));
    this.current = undefined;
    await Promise.all(this.nbd.map((s) => s.close()));
    this.nbd = [];
    for (const m of this.ramFiles) m.release();
    this.ramFiles = [];
    if (this.dir !== undefined) await rm(this.dir, { recursive: true, force: true });
  }
}
