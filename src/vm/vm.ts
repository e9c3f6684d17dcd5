import { readFileSync } from "node:fs";
import { formatMac, guestCmdline, type VmConfig } from "../config/index.js";
import type { Engine, EngineId } from "../engine/engine.js";
import { EngineError } from "../engine/errors.js";
import { engineFactory, type EngineFactory } from "./engine-factory.js";
import { ConsoleBuffer } from "./console-buffer.js";
import { VmError } from "./errors.js";
import { NicBackend } from "./nic-backend.js";
import { RawDiskBackend } from "./raw-disk.js";
import { DiskSlot } from "./disk-slot.js";
import { ANNOUNCE_INITIAL_MS, ANNOUNCE_ROUNDS, ANNOUNCE_STEP_MS, announceFrames } from "./announce.js";

export type VmRunState = "created" | "running" | "paused" | "destroyed";

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
  memoryMiB: number;
  tap: string | undefined;
  bridge: string | undefined;
  mac: string | undefined;
  uptimeMs: number;
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
  private startedAt = 0;
  private readonly announceTimers = new Set<NodeJS.Timeout>();

  constructor(
    readonly config: VmConfig,
    private readonly options: VmOptions = {},
  ) {}

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
    const config = this.config;
    try {
      const kernel = readImage(this.name, "kernel", config.kernel);
      const initrd = config.ramdisk ? readImage(this.name, "ramdisk", config.ramdisk) : undefined;
      for (const d of config.disks) {
        try {
          const raw = RawDiskBackend.open(d.target, d.access === "ro");
          this.disks.push(raw);
          this.slots.push(new DiskSlot(raw));
        } catch (err) {
          throw new VmError(this.name, "DISK", `${(err as Error).message} (${d.at.file}:${d.at.line})`);
        }
      }
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
        { ...(this.options.biosPath ? { biosPath: this.options.biosPath } : {}), ...(vif?.model ? { nicModel: vif.model } : {}) },
      );
      this.engine = engine;
      engine.onConsoleOutput((bytes) => this.console.push(bytes));
      if (vif && this.options.attachNetwork !== false) {
        try {
          this.nic = NicBackend.open(this.name, vif, engine, this.options.deferBridge !== true);
        } catch (err) {
          throw new VmError(this.name, "NIC", (err as Error).message);
        }
      }
      if (opts.incoming) {
        await engine.start({ paused: true });
        this.runState = "paused";
        await opts.incoming(engine);
        if (opts.stayPaused) {
          this.startedAt = Date.now();
          return;
        }
        await engine.resume();
        this.announce();
      } else {
        await engine.start();
      }
      this.startedAt = Date.now();
      this.runState = "running";
    } catch (err) {
      await this.destroy();
      if (err instanceof VmError) throw err;
      if (err instanceof EngineError) throw new VmError(this.name, "ENGINE", err.message);
      throw err;
    }
  }

  async pause(): Promise<void> {
    if (this.runState === "paused") return;
    if (this.runState !== "running") throw new VmError(this.name, "STATE", `cannot pause a VM that is ${this.runState}`);
    await this.machine.pause();
    this.runState = "paused";
  }

  async unpause(): Promise<void> {
    if (this.runState === "running") return;
    if (this.runState !== "paused") throw new VmError(this.name, "STATE", `cannot unpause a VM that is ${this.runState}`);
    await this.machine.resume();
    this.runState = "running";
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
      memoryMiB: this.config.memoryMiB,
      tap: this.nic?.tapName,
      bridge: vif?.bridge,
      mac: vif ? formatMac(vif.mac) : undefined,
      uptimeMs: this.startedAt ? Date.now() - this.startedAt : 0,
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

  /** Stops the guest and releases engine, TAP and disks; idempotent. */
  async destroy(): Promise<void> {
    if (this.runState === "destroyed") return;
    this.runState = "destroyed";
    for (const t of this.announceTimers) clearTimeout(t);
    this.announceTimers.clear();
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
