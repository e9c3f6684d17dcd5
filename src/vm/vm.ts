import { readFileSync } from "node:fs";
import { formatMac, guestCmdline, type VmConfig } from "../config/index.js";
import type { Engine, EngineId } from "../engine/engine.js";
import { EngineError } from "../engine/errors.js";
import { engineFactory, type EngineFactory } from "./engine-factory.js";
import { guestStopOf, type GuestStop } from "./guest-stop.js";
import { ConsoleBuffer } from "./console-buffer.js";
import { VmError } from "./errors.js";
import { NicBackend, type LinkTranslation } from "./nic-backend.js";
import { RawDiskBackend } from "./raw-disk.js";
import { DiskSlot } from "./disk-slot.js";
import { ANNOUNCE_INITIAL_MS, ANNOUNCE_ROUNDS, ANNOUNCE_STEP_MS, announceFrames } from "./announce.js";
import { elapsedMs, monotonicMs } from "../sys/clock.js";

export type VmRunState = "created" | "running" | "paused" | "restarting" | "destroyed";

/** The console line the guest's init prints when its service is up (guest/init.sh). */
export const GUEST_READY_MARKER = "COLO-GUEST-READY";
export const GUEST_FAILED_MARKER = "COLO-GUEST-FAILED";

export interface VmOptions {
  /** Create the TAP and join the bridge; false runs the VM with its NIC unplugged. */
  attachNetwork?: boolean;
  /**
   * Create the TAP but keep it off the bridge until joinBridge(): a
   * secondary VM's TAP joins the LAN only at failover (DESIGN.md §6).
   */
  deferBridge?: boolean;
  /** Passed to the engine (tests may use another BIOS). */
  biosPath?: string;
  /** Builds the engine instead of the factory of the config's `engine=` (tests: a fake engine). */
  buildEngine?: EngineFactory;
}

export interface VmStatus {
  name: string;
  state: VmRunState;
  /** The engine that runs the guest (its own id), undefined before the VM started. */
  engine: EngineId | undefined;
  /** How the engine runs the guest's instructions (qemu: kvm or tcg, and why), when it says. */
  accelerator?: { name: string; why: string };
  dirtyLog?: { name: string; why: string };
  /** The engine's own process, when the guest runs in one (qemu: QEMU's pid). */
  enginePid?: number;
  memoryMiB: number;
  tap: string | undefined;
  bridge: string | undefined;
  mac: string | undefined;
  uptimeMs: number;
  /** The last time the guest stopped (poweroff, reboot, crash), since the VM (re)started. */
  guestStop?: GuestStop;
  disks: { path: string; readOnly: boolean; reads: number; writes: number; bytesWritten: number }[];
  nic: { rxFrames: number; txFrames: number; txDropped: number; error?: string } | undefined;
}

function readImage(vm: string, what: string, path: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new VmError(vm, "KERNEL", `cannot read ${what} ${path}: ${e.code ?? e.message}`);
  }
}

/**
 * A running VM: an engine, a NIC backend on a TAP device, block backends on
 * raw image files and the serial console. Owns all of them: destroy()
 * releases every one, also after a failed start.
 */
export class Vm {
  readonly console = new ConsoleBuffer();
  private engine: Engine | undefined;
  private readonly disks: RawDiskBackend[] = [];
  /** What the engine sees, one per disk: the raw image or a replication layer in front of it. */
  private readonly slots: DiskSlot[] = [];
  private nic: NicBackend | undefined;
  private runState: VmRunState = "created";
  /** The last pause/unpause (settled or not): the next one waits for it. */
  private runTurns: Promise<void> = Promise.resolve();
  /** When the machine started (monotonic clock): for `uptimeMs` only. */
  private startedAt: number | undefined;
  private readonly announceTimers = new Set<NodeJS.Timeout>();
  /** The TAP is (or, at start, goes) on the vif's bridge: not a secondary's until it takes over. */
  private onBridge: boolean;
  private lastStop: GuestStop | undefined;
  private readonly stopListeners: ((stop: GuestStop) => void)[] = [];

  constructor(
    readonly config: VmConfig,
    private readonly options: VmOptions = {},
  ) {
    this.onBridge = options.deferBridge !== true;
  }

  get state(): VmRunState {
    return this.runState;
  }

  get name(): string {
    return this.config.name;
  }

  /** The engine, for layers above (state, replication). */
  get machine(): Engine {
    if (!this.engine) throw new VmError(this.name, "STATE", "not started");
    return this.engine;
  }

  /**
   * Builds the machine and boots it. With `incoming`, the vCPU does not run
   * until `incoming(engine)` has filled RAM and loaded state (restore,
   * migration); then the VM runs on and announces its MAC on the LAN.
   */
  async start(opts: { incoming?: (engine: Engine) => Promise<void>; stayPaused?: boolean } = {}): Promise<void> {
    if (this.runState !== "created") throw new VmError(this.name, "STATE", `cannot start a VM that is ${this.runState}`);
    try {
      for (const d of this.config.disks) {
        try {
          const raw = RawDiskBackend.open(d.target, d.access === "ro");
          this.disks.push(raw);
          this.slots.push(new DiskSlot(raw));
        } catch (err) {
          throw new VmError(this.name, "DISK", `${(err as Error).message} (${d.at.file}:${d.at.line})`);
        }
      }
      await this.boot(opts);
    } catch (err) {
      await this.destroy();
      throw this.vmError(err);
    }
  }

  /**
   * xl's `restart`: the machine is replaced by a new one booted from the
   * same config (kernel and ramdisk read again). The disk images and the
   * console stay; the TAP is made again (on the bridge if the old one was);
   * whatever replication had put in front of the disks or on the NIC is
   * gone (the caller ends replication first). A failure destroys the VM.
   */
  async restart(): Promise<void> {
    if (this.runState !== "running" && this.runState !== "paused") {
      throw new VmError(this.name, "STATE", `cannot restart a VM that is ${this.runState}`);
    }
    this.runState = "restarting";
    try {
      this.clearAnnounce();
      this.nic?.close();
      this.nic = undefined;
      const old = this.engine;
      this.engine = undefined;
      await old?.destroy();
      for (const slot of this.slots) {
        slot.interpose(undefined);
        slot.raw.onWrite = undefined;
      }
      this.lastStop = undefined;
      await this.boot({});
    } catch (err) {
      await this.destroy();
      throw this.vmError(err);
    }
  }

  /** A new engine and NIC over the open disks, booted (or filled by `incoming`). */
  private async boot(opts: { incoming?: (engine: Engine) => Promise<void>; stayPaused?: boolean }): Promise<void> {
    const config = this.config;
    const kernel = readImage(this.name, "kernel", config.kernel);
    const initrd = config.ramdisk ? readImage(this.name, "ramdisk", config.ramdisk) : undefined;
    const vif = config.vifs[0];
    const build = this.options.buildEngine ?? engineFactory(config.engine);
    const engine = build(
      {
        memoryBytes: config.memoryMiB * 2 ** 20,
        kernel,
        ...(initrd ? { initrd } : {}),
        cmdline: guestCmdline(config),
        ...(vif ? { nicMac: vif.mac } : {}),
        disks: this.slots,
      },
      {
        ...(this.options.biosPath ? { biosPath: this.options.biosPath } : {}),
        ...(vif?.model ? { nicModel: vif.model } : {}),
        vmName: this.name,
        accel: config.accel,
      },
    );
    this.engine = engine;
    engine.onConsoleOutput((bytes) => this.console.push(bytes));
    engine.onEvent((event) => {
      // A replaced engine's late word is not this VM's.
      if (engine !== this.engine) return;
      // Wall clock: `at` is an instant shown in status (GuestStop), not a duration.
      const stop = guestStopOf(event, Date.now());
      this.lastStop = stop;
      for (const l of this.stopListeners) l(stop);
    });
    if (vif && this.options.attachNetwork !== false) {
      try {
        this.nic = NicBackend.open(this.name, vif, engine, this.onBridge);
      } catch (err) {
        throw new VmError(this.name, "NIC", (err as Error).message);
      }
    }
    if (opts.incoming) {
      await engine.start({ paused: true });
      this.runState = "paused";
      await opts.incoming(engine);
      if (opts.stayPaused) {
        this.startedAt = monotonicMs();
        return;
      }
      await engine.resume();
      this.announce();
    } else {
      await engine.start();
    }
    this.startedAt = monotonicMs();
    this.runState = "running";
  }

  private vmError(err: unknown): unknown {
    if (err instanceof VmError) return err;
    if (err instanceof EngineError) return new VmError(this.name, "ENGINE", err.message);
    return err;
  }

  /**
   * Hears every time the guest stops (poweroff, reboot) or its engine fails
   * (crash), after the fact: the VM does nothing by itself (the vCPU no
   * longer runs); the listener decides (the config's on_poweroff, on_reboot,
   * on_crash). Listeners stay across restart().
   */
  onGuestStop(listener: (stop: GuestStop) => void): void {
    this.stopListeners.push(listener);
  }

  /**
   * Pause and unpause run one after the other, in the order called: an
   * unpause called while a pause is still on its way (a QMP `stop` takes a
   * few ms) waits for it and then unpauses, instead of finding the VM
   * "running" and returning while the pause then stops it for good.
   */
  pause(): Promise<void> {
    return this.inTurn(async () => {
      if (this.runState === "paused") return;
      if (this.runState !== "running") throw new VmError(this.name, "STATE", `cannot pause a VM that is ${this.runState}`);
      await this.machine.pause();
      this.runState = "paused";
    });
  }

  unpause(): Promise<void> {
    return this.inTurn(async () => {
      if (this.runState === "running") return;
      if (this.runState !== "paused") throw new VmError(this.name, "STATE", `cannot unpause a VM that is ${this.runState}`);
      await this.machine.resume();
      this.runState = "running";
    });
  }

  /** Runs `fn` after every pause/unpause called before it has settled. */
  private inTurn(fn: () => Promise<void>): Promise<void> {
    const turn = this.runTurns.then(fn);
    this.runTurns = turn.catch(() => undefined);
    return turn;
  }

  /**
   * Tells the LAN the guest's MAC lives behind this host's TAP now (after a
   * migration or failover): RARP + gratuitous ARP, repeated like QEMU does.
   */
  announce(): void {
    const vif = this.config.vifs[0];
    if (!vif || !this.nic) return;
    const frames = announceFrames(vif.mac, vif.ip);
    let at = 0;
    for (let round = 0; round < ANNOUNCE_ROUNDS; round++) {
      const timer = setTimeout(() => {
        this.announceTimers.delete(timer);
        for (const f of frames) this.nic?.sendToHost(f);
      }, at);
      this.announceTimers.add(timer);
      at += ANNOUNCE_INITIAL_MS + round * ANNOUNCE_STEP_MS;
    }
  }

  /**
   * Interposes on the guest's output frames (Remus output commit, COLO
   * proxy): `filter` returns false to keep a frame from the TAP.
   */
  setOutputFilter(filter: ((frame: Uint8Array) => boolean) | undefined): void {
    if (this.nic) this.nic.transmitFilter = filter;
  }

  /**
   * Interposes on frames from the LAN before the guest gets them (COLO:
   * mirror to the secondary; rewrite on the secondary after failover).
   */
  setInputFilter(filter: ((frame: Uint8Array) => Uint8Array | undefined) | undefined): void {
    if (this.nic) this.nic.receiveFilter = filter;
  }

  /** The rewriting at the TAP (undefined: none; a survivor of a failover has one). */
  get linkTranslation(): LinkTranslation | undefined {
    return this.nic?.translation;
  }

  /** The outermost rewriting at the TAP, kept across replication sessions (NicBackend.translation). */
  setLinkTranslation(t: LinkTranslation | undefined): void {
    if (this.nic) this.nic.translation = t;
  }

  /** Delivers a frame to the guest that did not come from its TAP (COLO: mirrored input on the secondary). */
  deliverInput(frame: Uint8Array): void {
    this.engine?.deliver(frame);
  }

  /** Sends a frame the guest produced earlier (held output being released). */
  sendOutput(frame: Uint8Array): void {
    this.nic?.sendToHost(frame);
  }

  /** Puts the TAP on its bridge (a secondary taking over); then announces the MAC. */
  joinBridge(): void {
    const vif = this.config.vifs[0];
    if (!this.nic || !vif?.bridge) return;
    this.nic.joinBridge(vif.bridge);
    this.onBridge = true;
  }

  /** The VM's disks, in config order: the raw image and the slot the engine reads through. */
  diskSlots(): readonly DiskSlot[] {
    return this.slots;
  }

  sendConsoleInput(bytes: Uint8Array): void {
    this.machine.sendConsoleInput(bytes);
  }

  status(): VmStatus {
    const vif = this.config.vifs[0];
    return {
      name: this.name,
      state: this.runState,
      engine: this.engine?.id,
      ...(this.engine?.accelerator !== undefined ? { accelerator: this.engine.accelerator } : {}),
      ...(this.engine?.dirtyLog !== undefined ? { dirtyLog: this.engine.dirtyLog } : {}),
      ...(this.engine?.processId !== undefined ? { enginePid: this.engine.processId } : {}),
      memoryMiB: this.config.memoryMiB,
      tap: this.nic?.tapName,
      bridge: vif?.bridge,
      mac: vif ? formatMac(vif.mac) : undefined,
      uptimeMs: this.startedAt !== undefined ? elapsedMs(this.startedAt) : 0,
      ...(this.lastStop ? { guestStop: this.lastStop } : {}),
      disks: this.disks.map((d) => ({
        path: d.path,
        readOnly: d.readOnly,
        reads: d.stats.reads,
        writes: d.stats.writes,
        bytesWritten: d.stats.bytesWritten,
      })),
      nic: this.nic?.stats(),
    };
  }

  private clearAnnounce(): void {
    for (const t of this.announceTimers) clearTimeout(t);
    this.announceTimers.clear();
  }

  /** Stops the guest and releases engine, TAP and disks; idempotent. */
  async destroy(): Promise<void> {
    if (this.runState === "destroyed") return;
    this.runState = "destroyed";
    this.clearAnnounce();
    const errors: unknown[] = [];
    try {
      this.nic?.close();
    } catch (err) {
      errors.push(err);
    }
    this.nic = undefined;
    try {
      await this.engine?.destroy();
    } catch (err) {
      errors.push(err);
    }
    for (const d of this.disks) {
      try {
        d.close();
      } catch (err) {
        errors.push(err);
      }
    }
    this.disks.length = 0;
    this.slots.length = 0;
    if (errors.length > 0) throw errors[0];
  }
}
