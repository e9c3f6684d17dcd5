// The order of these three imports is the guest clock's wiring (guest-clock.ts): ESM evaluates
// them in turn. First the guest clock replaces performance.now; then v86's module evaluates and
// binds its timers' clock to it; then v86-clock-bound.js gives the process the host's performance.now back.
import { guestNow, setGuestNow } from "./guest-clock.js";
import { V86 } from "v86";
import "./v86-clock-bound.js";
import type { V86Options } from "v86";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { PAGE_SIZE, type Engine, type EngineEvent, type LoadStateOptions, type MachineSpec } from "../engine.js";
import { EngineError } from "../errors.js";
import { V86BlockAdapter } from "./block-adapter.js";
import { ShadowDirtyTracker, type PageTracker } from "../dirty-tracker.js";
import { WriteLogTracker } from "../write-log-tracker.js";
import {
  EFLAGS_IF,
  internals,
  microtickOf,
  PCI_BAR0_DWORD,
  VIRTIO_NET_RX_QUEUE,
  VIRTIO_STATUS_DRIVER_OK,
  type V86Cpu,
  type V86WithInternals,
} from "./v86-internals.js";

/** Debian's seabios package (ENGINE-NOTES.md): a BIOS without a VGA BIOS. */
export const DEFAULT_BIOS_PATH = "/usr/share/seabios/bios.bin";

/** v86 loads the initrd at 64 MiB (ENGINE-NOTES.md): RAM must extend past it. */
const V86_INITRD_LOAD_ADDRESS = 64 * 2 ** 20;

/** VGA memory is part of every saved state: keep it at v86's minimum useful size. */
const VGA_MEMORY_BYTES = 2 ** 18;

/**
 * The emu state blob (EMU_STATE format 2, docs/specs/stream.md §4.6): the
 * guest clock (f64 ms, little-endian) at the save, then v86's save_state()
 * output without RAM.
 */
export const EMU_STATE_FORMAT_VERSION = 2;
const GUEST_CLOCK_BYTES = 8;

/** Inbound frames held while paused or while the guest's RX ring is not ready. */
const MAX_PENDING_RX_FRAMES = 1024;

export interface EmuOptions {
  /** BIOS image; a Multiboot kernel runs without one. */
  biosPath?: string;
  /** NIC model the guest sees. */
  nicModel?: "virtio" | "ne2k";
  /**
   * How dirty pages are found: "auto" (default) the kernel's write log of
   * guest RAM when this kernel has one (Linux 6.7+: src/sys/write-log.ts),
   * else a compare with a shadow copy; "shadow-compare" always the compare.
   */
  dirtyLog?: "auto" | "shadow-compare";
}

function v86WasmPath(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve("v86")), "v86.wasm");
}

/** The installed v86 package's version ("0.5.462+g5f9a90f"): its saved states are only as stable as v86 is. */
function v86Version(): string {
  const require = createRequire(import.meta.url);
  const pkg: unknown = require("v86/package.json");
  const version = typeof pkg === "object" && pkg !== null ? (pkg as { version?: unknown }).version : undefined;
  if (typeof version !== "string") throw new EngineError("emu", "BAD_SPEC", "the v86 package names no version");
  return version;
}

/** Engine.compatibility of every emu engine of this process: v86's version and the state format. */
let emuCompatibility: string | undefined;

/** What an emu engine of this process says as its Engine.compatibility, without building one ("v86 0.5.462+g5f9a90f state 2"). */
export function emuCompatibilityDescriptor(): string {
  emuCompatibility ??= `v86 ${v86Version()} state ${EMU_STATE_FORMAT_VERSION}`;
  return emuCompatibility;
}

function exactArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  return copy.buffer;
}

type Listener<T> = (value: T) => void;

/**
 * The `emu` engine: the guest runs in the v86 x86 emulator (wasm JIT) on the
 * main thread. Dirty pages come from a shadow copy of RAM; the state without
 * RAM comes from v86's own save_state() with its memory packer disabled.
 */
export class EmuEngine implements Engine {
  readonly id = "emu" as const;
  readonly stateFormatVersion = EMU_STATE_FORMAT_VERSION;
  /** "v86 0.5.462+g5f9a90f state 2": known from construction. */
  readonly compatibility: string;
  readonly memoryBytes: number;
  readonly pageCount: number;

  private emulator: V86 | undefined;
  private inner: V86WithInternals | undefined;
  /** The shadow compare until start() opened the kernel's write log (or could not: `dirtyLog` says why). */
  private tracker: PageTracker;
  /** How dirty pages are found, once started (status): the kernel's write log, or the shadow compare and why. */
  dirtyLog: { name: "write-log" | "shadow-compare"; why: string } | undefined;
  private isRunning = false;
  /** Where guest RAM starts in v86's wasm memory (fixed at start). */
  private ramOffset = 0;
  private destroyed = false;
  private guestNicSeen = false;
  private readonly rxQueue: Uint8Array[] = [];
  private rxRetry: NodeJS.Timeout | undefined;
  private droppedRxFrames = 0;
  private readonly txListeners: Listener<Uint8Array>[] = [];
  private readonly consoleListeners: Listener<Uint8Array>[] = [];
  private readonly eventListeners: Listener<EngineEvent>[] = [];
  private consoleBatch: number[] = [];
  private consoleFlushScheduled = false;
  /** Why the engine failed (a "fault" event was raised); it runs no more. */
  private failure: string | undefined;

  constructor(
    private readonly spec: MachineSpec,
    private readonly options: EmuOptions = {},
  ) {
    if (!Number.isInteger(spec.memoryBytes) || spec.memoryBytes <= 0 || spec.memoryBytes % PAGE_SIZE !== 0) {
      throw new EngineError("emu", "BAD_SPEC", `memory size ${spec.memoryBytes} is not a positive multiple of ${PAGE_SIZE}`);
    }
    if (spec.initrd && spec.memoryBytes <= V86_INITRD_LOAD_ADDRESS + spec.initrd.length) {
      const needMiB = Math.ceil((V86_INITRD_LOAD_ADDRESS + spec.initrd.length) / 2 ** 20) + 1;
      throw new EngineError(
        "emu",
        "BAD_SPEC",
        `memory ${spec.memoryBytes / 2 ** 20} MiB is too small: v86 loads the initrd (${(spec.initrd.length / 2 ** 20).toFixed(1)} MiB) at 64 MiB; use at least ${needMiB} MiB`,
      );
    }
    if (spec.disks.length > 2) {
      throw new EngineError("emu", "BAD_SPEC", `at most 2 disks (hda, hdb) are supported, got ${spec.disks.length}`);
    }
    if (spec.nicMac && spec.nicMac.length !== 6) {
      throw new EngineError("emu", "BAD_SPEC", `NIC MAC must be 6 octets, got ${spec.nicMac.length}`);
    }
    this.memoryBytes = spec.memoryBytes;
    this.pageCount = spec.memoryBytes / PAGE_SIZE;
    this.tracker = new ShadowDirtyTracker(spec.memoryBytes);
    this.compatibility = emuCompatibilityDescriptor();
  }

  get running(): boolean {
    return this.isRunning;
  }

  /** Inbound frames dropped because the pending queue was full. */
  get rxDropped(): number {
    return this.droppedRxFrames;
  }

  async start(opts: { paused?: boolean } = {}): Promise<void> {
    if (this.emulator) throw new EngineError("emu", "BAD_SPEC", "already started");
    const spec = this.spec;
    const options: V86Options = {
      wasm_path: v86WasmPath(),
      memory_size: spec.memoryBytes,
      vga_memory_size: VGA_MEMORY_BYTES,
      autostart: false,
      disable_keyboard: true,
      disable_mouse: true,
      disable_speaker: true,
      cmdline: spec.cmdline,
    };
    const biosPath = this.options.biosPath ?? (spec.kernelFormat === "multiboot" ? undefined : DEFAULT_BIOS_PATH);
    if (biosPath) {
      let bios: Buffer;
      try {
        bios = readFileSync(biosPath);
      } catch (err) {
        throw new EngineError("emu", "BAD_SPEC", `cannot read BIOS ${biosPath}: ${(err as Error).message} (install Debian's seabios)`);
      }
      options.bios = { buffer: exactArrayBuffer(bios) };
    }
    if (spec.kernelFormat === "multiboot") options.multiboot = { buffer: exactArrayBuffer(spec.kernel) };
    else options.bzimage = { buffer: exactArrayBuffer(spec.kernel) };
    if (spec.initrd) options.initrd = { buffer: exactArrayBuffer(spec.initrd) };
    if (spec.nicMac) options.net_device = { type: this.options.nicModel ?? "virtio" };
    // v86 accepts any object with get/set/load as a disk; its typings do not say so.
    const disks = options as Omit<V86Options, "hda" | "hdb"> & { hda?: V86BlockAdapter; hdb?: V86BlockAdapter };
    const [hda, hdb] = spec.disks;
    if (hda) disks.hda = new V86BlockAdapter(hda);
    if (hdb) disks.hdb = new V86BlockAdapter(hdb);

    const emulator = new V86(options);
    this.emulator = emulator;
    await new Promise<void>((resolve) => emulator.add_listener("emulator-loaded", () => resolve()));
    this.inner = internals(emulator);
    this.ramOffset = this.inner.v86.cpu.mem8.byteOffset;
    this.openDirtyLog();
    if (spec.nicMac) {
      const nic = this.inner.v86.cpu.devices.virtio_net;
      if (nic) nic.mac.set(spec.nicMac);
    }
    emulator.add_listener("net0-send", (frame: Uint8Array) => this.onGuestFrame(frame));
    emulator.add_listener("serial0-output-byte", (byte: number) => this.onConsoleByte(byte));
    this.watchGuestStops(this.inner);
    if (opts.paused) return;
    await emulator.run();
    this.isRunning = true;
  }

  /**
   * How the guest stops, as events (EngineEvent): v86's "cpu-event-halt"
   * (hlt with IF clear: the vCPU never runs again) is a poweroff; its reset
   * (reboot_internal) is replaced by a stop of the vCPU, reported as a
   * reboot; an exception out of its main loop is a fault.
   */
  private watchGuestStops(inner: V86WithInternals): void {
    const main = inner.v86;
    const cpu = main.cpu;
    inner.bus.register("cpu-event-halt", () => this.raise({ kind: "poweroff" }), this);
    cpu.reboot_internal = () => {
      // Halted with interrupts off: the state of a vCPU that stopped for good (v86's main
      // loop stops executing within the current block). A loaded state replaces it.
      cpu.flags[0] = (cpu.flags[0] ?? 0) & ~EFLAGS_IF;
      cpu.in_hlt[0] = 1;
      this.raise({ kind: "reboot" });
    };
    const tick = main.do_tick;
    main.do_tick = () => {
      try {
        tick.call(main);
      } catch (err) {
        this.fail(main, err);
      }
    };
  }

  /** v86 threw out of its main loop: no tick follows; stop as a stop() would, report once. */
  private fail(main: V86WithInternals["v86"], err: unknown): void {
    if (this.failure !== undefined) return;
    const what = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    this.failure = `v86 failed while running the guest (${what}); a wasm trap is how v86 stops on what it does not implement, such as a triple fault`;
    this.isRunning = false;
    main.running = false;
    main.stopping = false;
    // Ends a stop() that was waiting for this tick, and tells v86's starter the CPU is not running.
    main.bus.send("emulator-stopped");
    this.raise({ kind: "fault", message: this.failure });
  }

  /** Listeners hear events after the guest instruction that raised them, never from inside v86. */
  private raise(event: EngineEvent): void {
    setImmediate(() => {
      if (this.destroyed) return;
      for (const l of this.eventListeners) l(event);
    });
  }

  private requireNotFailed(what: string): void {
    if (this.failure !== undefined) throw new EngineError("emu", "FAULT", `cannot ${what}: ${this.failure}`);
  }

  private cpu(): V86Cpu {
    if (this.destroyed) throw new EngineError("emu", "DESTROYED", "engine destroyed");
    if (!this.inner) throw new EngineError("emu", "NOT_STARTED", "machine not started");
    return this.inner.v86.cpu;
  }

  /** What v86's timers read as the time now (its microtick): the guest clock (guest-clock.ts), never the process's performance.now. */
  v86Now(): number {
    if (this.destroyed) throw new EngineError("emu", "DESTROYED", "engine destroyed");
    if (!this.inner) throw new EngineError("emu", "NOT_STARTED", "machine not started");
    return microtickOf(this.inner)();
  }

  private requireEmulator(): V86 {
    if (this.destroyed) throw new EngineError("emu", "DESTROYED", "engine destroyed");
    if (!this.emulator) throw new EngineError("emu", "NOT_STARTED", "machine not started");
    return this.emulator;
  }

  async pause(): Promise<void> {
    const emulator = this.requireEmulator();
    if (!this.isRunning) return;
    this.isRunning = false;
    const stopped = emulator.stop();
    // v86 notices `stopping` at its next tick, which an idle guest schedules up to its
    // next timer event (often 10 ms and more away): run that tick now instead.
    const main = this.inner?.v86;
    if (main && main.idle && main.stopping) main.yield_callback(main.tick_counter);
    await stopped;
  }

  async resume(): Promise<void> {
    const emulator = this.requireEmulator();
    this.requireNotFailed("resume");
    if (this.isRunning) return;
    await emulator.run();
    this.isRunning = true;
    this.flushRx();
  }

  /** The kernel's write log of guest RAM if it has one (and the options allow), else the shadow compare. */
  private openDirtyLog(): void {
    const log = this.options.dirtyLog === "shadow-compare" ? { unavailable: "asked for (dirtyLog: shadow-compare)" } : WriteLogTracker.open(this.ram());
    if ("unavailable" in log) {
      this.dirtyLog = { name: "shadow-compare", why: `no kernel write log: ${log.unavailable}` };
      // The shadow is mapped lazily: without this, the first takeDirtyPages() (protection start)
      // pays a page fault per page of RAM in one go (measured: 750 ms for 160 MiB, the event loop blocked).
      void this.tracker.prefault();
      return;
    }
    this.tracker = log;
    this.dirtyLog = { name: "write-log", why: "userfaultfd write-protect (async) + PAGEMAP_SCAN on guest RAM" };
  }

  /** A fresh view each call: wasm memory growth detaches older views (see V86Cpu.mem8). */
  ram(): Uint8Array {
    return new Uint8Array(this.cpu().wasm_memory.buffer, this.ramOffset, this.memoryBytes);
  }

  takeDirtyPages(): Uint32Array {
    return this.tracker.take(this.ram());
  }

  markDirty(pfn: number): void {
    this.tracker.markDirty(pfn);
  }

  pagesCopied(pfns: ArrayLike<number>, sent?: Uint8Array): void {
    this.tracker.copied(this.ram(), pfns, sent);
  }

  async saveState(): Promise<Uint8Array> {
    const emulator = this.requireEmulator();
    const cpu = this.cpu();
    const pageCount = this.pageCount;
    const original = cpu.pack_memory;
    // RAM travels separately (PAGE_DATA records): give v86's packer no pages.
    cpu.pack_memory = () => ({
      bitmap: { get_buffer: () => new ArrayBuffer(Math.ceil(pageCount / 8)) },
      packed_memory: new Uint8Array(0),
    });
    try {
      const clock = guestNow();
      const v86State = new Uint8Array(await emulator.save_state());
      const blob = new Uint8Array(GUEST_CLOCK_BYTES + v86State.length);
      new DataView(blob.buffer).setFloat64(0, clock, true);
      blob.set(v86State, GUEST_CLOCK_BYTES);
      return blob;
    } finally {
      cpu.pack_memory = original;
    }
  }

  async loadState(state: Uint8Array, opts: LoadStateOptions = {}): Promise<void> {
    const emulator = this.requireEmulator();
    this.requireNotFailed("load a state");
    if (this.isRunning) throw new EngineError("emu", "NOT_PAUSED", "loadState needs a paused machine");
    const cpu = this.cpu();
    const original = cpu.unpack_memory;
    const originalJitClear = cpu.jit_clear_cache;
    // A checkpoint changes few pages: keep the JIT's compiled code for the rest
    // (clearing it all makes the SVM run cold after every checkpoint).
    if (opts.changedPages) cpu.jit_clear_cache = () => {};
    const pci = cpu.devices.pci;
    const originalPciSetState = pci.set_state;
    // v86's unpacker zeroes RAM before writing the packed pages: keep our RAM.
    cpu.unpack_memory = () => {};
    // Hide the holes in the IDE controller's BARs from v86's restore (see V86Pci).
    pci.set_state = (pciState: unknown[]) => {
      const holes: { device: number; index: number; value: number }[] = [];
      pci.devices.forEach((device, i) => {
        const space = pciState[i];
        if (!device || !(space instanceof Int32Array)) return;
        device.pci_bars.forEach((bar, nr) => {
          const index = PCI_BAR0_DWORD + nr;
          if (!bar) holes.push({ device: i, index, value: space[index] ?? 0 });
          if (!bar) space[index] = 0;
        });
      });
      originalPciSetState.call(pci, pciState);
      // Put the guest-visible config-space values back as they were saved.
      for (const h of holes) {
        const live = pci.device_spaces[h.device];
        if (live) live[h.index] = h.value;
      }
    };
    try {
      if (state.length <= GUEST_CLOCK_BYTES) throw new Error(`state of ${state.length} bytes is too short`);
      const clock = new DataView(state.buffer, state.byteOffset, GUEST_CLOCK_BYTES).getFloat64(0, true);
      if (!Number.isFinite(clock) || clock < 0) throw new Error(`bad guest clock ${clock} in the state`);
      // Timers in the state are absolute times of the saving guest's clock: continue it.
      setGuestNow(clock);
      await emulator.restore_state(exactArrayBuffer(state.subarray(GUEST_CLOCK_BYTES)));
      // A whole machine loaded: the dirty-page count restarts here (Engine.loadState).
      if (opts.changedPages === undefined) this.tracker.resync(this.ram());
    } catch (err) {
      throw new EngineError("emu", "BAD_STATE", `cannot load state: ${(err as Error).message}`);
    } finally {
      cpu.unpack_memory = original;
      cpu.jit_clear_cache = originalJitClear;
      pci.set_state = originalPciSetState;
    }
    if (opts.changedPages) {
      for (const pfn of Array.from(opts.changedPages, Number)) cpu.jit_dirty_cache(pfn * PAGE_SIZE, (pfn + 1) * PAGE_SIZE);
    }
    // Frames queued for the replaced machine are not this machine's input.
    this.rxQueue.length = 0;
    // The NIC's MAC comes from our spec, not from the state.
    const nic = cpu.devices.virtio_net;
    if (nic && this.spec.nicMac) nic.mac.set(this.spec.nicMac);
    this.guestNicSeen = true;
  }

  onTransmit(listener: (frame: Uint8Array) => void): void {
    this.txListeners.push(listener);
  }

  deliver(frame: Uint8Array): void {
    if (this.destroyed) return;
    if (this.rxQueue.length >= MAX_PENDING_RX_FRAMES) {
      this.rxQueue.shift();
      this.droppedRxFrames++;
    }
    this.rxQueue.push(frame);
    this.flushRx();
  }

  pendingRx(): Uint8Array[] {
    return this.rxQueue.map((f) => Uint8Array.from(f));
  }

  onConsoleOutput(listener: (bytes: Uint8Array) => void): void {
    this.consoleListeners.push(listener);
  }

  sendConsoleInput(bytes: Uint8Array): void {
    this.requireEmulator().serial_send_bytes(0, bytes);
  }

  onEvent(listener: (event: EngineEvent) => void): void {
    this.eventListeners.push(listener);
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    if (this.rxRetry) clearTimeout(this.rxRetry);
    this.rxQueue.length = 0;
    const emulator = this.emulator;
    this.emulator = undefined;
    this.inner = undefined;
    this.isRunning = false;
    if (this.tracker instanceof WriteLogTracker) this.tracker.close();
    if (emulator) await emulator.destroy();
  }

  private onGuestFrame(frame: Uint8Array): void {
    this.guestNicSeen = true;
    // v86 hands out a view of a buffer it reuses: copy before it escapes.
    const copy = Uint8Array.from(frame);
    for (const l of this.txListeners) l(copy);
    if (this.rxQueue.length > 0) this.flushRx();
  }

  private rxReady(): boolean {
    if (!this.isRunning || !this.inner) return false;
    const nic = this.inner.v86.cpu.devices.virtio_net;
    if (!nic) return this.guestNicSeen; // ne2k: ready once the driver has transmitted
    const rx = nic.virtio.queues[VIRTIO_NET_RX_QUEUE];
    return (
      (nic.virtio.device_status & VIRTIO_STATUS_DRIVER_OK) !== 0 &&
      rx !== undefined &&
      Boolean(rx.is_configured()) &&
      rx.has_request()
    );
  }

  /** Deliver held frames while the guest has RX buffers; retry shortly otherwise. */
  private flushRx(): void {
    const inner = this.inner;
    if (!inner) return;
    while (this.rxQueue.length > 0 && this.rxReady()) {
      const frame = this.rxQueue.shift();
      if (frame) inner.bus.send("net0-receive", frame);
    }
    if (this.rxQueue.length > 0 && this.isRunning && !this.rxRetry) {
      this.rxRetry = setTimeout(() => {
        this.rxRetry = undefined;
        this.flushRx();
      }, 1);
    }
  }

  private onConsoleByte(byte: number): void {
    this.consoleBatch.push(byte);
    if (!this.consoleFlushScheduled) {
      this.consoleFlushScheduled = true;
      setImmediate(() => {
        this.consoleFlushScheduled = false;
        const bytes = Uint8Array.from(this.consoleBatch);
        this.consoleBatch = [];
        for (const l of this.consoleListeners) l(bytes);
      });
    }
  }
}
