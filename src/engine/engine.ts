/**
 * The engine interface: what the COLO toolstack needs from whatever executes
 * the guest's instructions (DESIGN.md §1). `emu` (v86) implements it today;
 * a `qemu` engine implements the same interface next, nothing above changes
 * (src/vm/engine-factory.ts picks the engine by the config's `engine=`).
 *
 * An engine knows nothing of COLO, files, TAP devices or sockets: it is given
 * byte-level backends (block, NIC frames, console) and exposes RAM and state.
 */

/** Page size of every engine: x86 4 KiB pages. */
export const PAGE_SIZE = 4096;
export const PAGE_SHIFT = 12;

/**
 * Engine ids as the stream format knows them (docs/specs/stream.md §4.2:
 * `kvm` is a reserved code). The engines a config may name are
 * src/config/engines.ts's ENGINE_NAMES.
 */
export type EngineId = "emu" | "kvm" | "qemu";

/**
 * A block device backend implemented by the VM layer (we own every byte).
 * Calls are synchronous: v86's IDE raises the completion interrupt before it
 * calls write(), so a write must be durable in our code when write() returns.
 */
export interface BlockBackend {
  /** Size of the device in bytes (a multiple of 512). */
  readonly byteLength: number;
  read(offset: number, length: number): Uint8Array;
  write(offset: number, data: Uint8Array): void;
  /**
   * Make what was written durable (e.g. fsync), beyond write() having
   * returned. The qemu engine calls it for the guest's flushes (NBD FLUSH,
   * FUA writes) before acknowledging them; the emu engine never calls it.
   * Optional: a backend without it has nothing more to do.
   */
  flush?(): void;
}

export interface MachineSpec {
  /** Guest RAM in bytes (a multiple of PAGE_SIZE). */
  memoryBytes: number;
  kernel: Uint8Array;
  /** How to load `kernel`: a Linux bzImage (default) or a Multiboot image (test guests). */
  kernelFormat?: "bzimage" | "multiboot";
  initrd?: Uint8Array;
  cmdline: string;
  /** The NIC's MAC address (6 octets); no NIC when absent. */
  nicMac?: Uint8Array;
  /** Block devices in order: the first is the guest's /dev/sda (IDE hda). */
  disks: BlockBackend[];
}

/**
 * How a guest stops, as the engine sees it (the VM layer decides what
 * follows: the config's on_poweroff, on_reboot, on_crash). Listeners hear
 * an event after the guest instruction that caused it, never from inside it.
 */
export type EngineEvent =
  /**
   * The guest halted its vCPU for good: x86 `hlt` with interrupts off, where
   * Linux's halt, and its poweroff on a machine without a power-off device
   * (emu), end. No guest instruction runs until loadState() replaces the
   * machine's state; `running`, pause() and resume() are unaffected.
   */
  | { kind: "poweroff" }
  /**
   * The guest asked for a reset (keyboard controller 0xFE, PCI 0xCF9; Linux's
   * reboot). The engine does not reset the machine: it stops the vCPU at
   * the request, as for "poweroff"; rebooting means a new machine, built by
   * the VM layer.
   */
  | { kind: "reboot" }
  /**
   * The engine failed and cannot run the guest on (emu: v86 threw, e.g. at
   * a triple fault, which it does not implement). `running` turns false;
   * resume() and loadState() throw EngineError FAULT; ram() and saveState()
   * still answer (what they hold is whatever the failure left); destroy()
   * releases the engine.
   */
  | { kind: "fault"; message: string };

export interface LoadStateOptions {
  /**
   * The only pages whose contents changed (written through ram()) since the
   * machine last ran, e.g. a checkpoint's pages: an engine that caches
   * translations of guest code (emu's JIT) then drops only theirs instead
   * of all. Without it, everything is assumed changed (restore, migration,
   * a secondary's first state), and the dirty-page count restarts at the
   * loaded machine: takeDirtyPages() then reports only what is written
   * after the load (one copy of RAM into the tracker's shadow, instead of a
   * compare of every page at the next call).
   */
  changedPages?: ArrayLike<number>;
}

export interface Engine {
  readonly id: EngineId;
  readonly memoryBytes: number;
  readonly pageCount: number;

  /**
   * Boot the machine; resolves when the first guest instruction may run.
   * With `paused`, the machine is built but its vCPU does not run until
   * resume(): an incoming migration or restore fills RAM and loads state first.
   */
  start(opts?: { paused?: boolean }): Promise<void>;
  /** Stop the vCPU; resolves when no guest instruction runs any more. */
  pause(): Promise<void>;
  /** Resume the vCPU; frames delivered while paused are delivered now. */
  resume(): Promise<void>;
  /**
   * How long the vCPUs stood still in the last pause()-resume() pair, in
   * ms, as the engine itself timed it (qemu: the timestamps of QEMU's STOP
   * and RESUME events); undefined when it does not know. The caller's own
   * figure also holds the time its stop and resume requests took to be
   * answered.
   */
  lastStoppedMs?(): number | undefined;
  readonly running: boolean;

  /**
   * Guest RAM. Take a new view for each use: an engine's memory may move
   * (emu: wasm memory growth detaches older views).
   * Writes through this view are not seen by takeDirtyPages() on engines
   * with a hardware dirty log; call markDirty() for them.
   */
  ram(): Uint8Array;
  /**
   * The page frame numbers written since the previous call (or since start),
   * sorted ascending, each once: by the guest, by the engine's own devices,
   * and pages passed to markDirty(). Best called while paused.
   */
  takeDirtyPages(): Uint32Array;
  /** Record that VMM code wrote this page outside the guest's view. */
  markDirty(pfn: number): void;
  /**
   * The caller has just copied these pages out of ram(): writes from now on
   * make them dirty again. A transfer must call it for every page it copies
   * while the guest runs; without it, a page written after a
   * takeDirtyPages() and written back to its old bytes before being copied
   * would be missed (emu and qemu compare bytes).
   *
   * `sent` is the pages' bytes as the caller copied them (pfns.length pages,
   * in order): the engine's copy takes those, not RAM's bytes of now. On
   * qemu the vCPU runs in another thread while we copy; a write between the
   * caller's copy and a second read of RAM would be in neither what was sent
   * nor what is compared against, and never sent. Without `sent` (the guest
   * cannot run meanwhile: a paused secondary), RAM is read.
   * kvm: nothing to do (its log records writes, not differences).
   */
  pagesCopied(pfns: ArrayLike<number>, sent?: Uint8Array): void;

  /**
   * How the guest's instructions run, for status and logs, once started:
   * qemu says "kvm" or "tcg" and why (accel=auto's choice); emu has nothing to add.
   */
  readonly accelerator?: { name: string; why: string } | undefined;
  /** How takeDirtyPages() finds pages, once started (emu: "write-log", the kernel's, or "shadow-compare" and why). */
  readonly dirtyLog?: { name: string; why: string } | undefined;
  /** The process that runs the guest when it is not this one (qemu: the running QEMU's pid); undefined for emu. */
  readonly processId?: number | undefined;
  /** The format version of saveState()'s blob, as recorded in the stream (docs/specs/stream.md). */
  readonly stateFormatVersion: number;
  /**
   * What another engine must match for this engine's saveState() to load
   * there, one line of printable ASCII (at most 256 octets): emu
   * "v86 0.5.462+g5f9a90f state 2" (v86's version, the state format), qemu
   * "qemu 7.2.22 pc" (QEMU's version, the machine type). Two engines of the
   * same id exchange state only when their descriptors are equal; a
   * migration, restore or replication carries the source's in the stream's
   * ENGINE_COMPAT record (docs/specs/stream.md §3.14), and the receiver
   * compares it with its own before it takes a page.
   *
   * Undefined until start() has resolved on an engine that learns it from
   * what it starts (qemu: QEMU's version comes from the QMP greeting of the
   * process); emu knows it from construction.
   */
  readonly compatibility: string | undefined;
  /** Everything except RAM (CPU, interrupt controllers, timers, devices). */
  saveState(): Promise<Uint8Array>;
  /**
   * Inverse of saveState(); the machine must be paused. Frames delivered
   * but not yet taken by the guest are dropped: they belong to the machine
   * that was replaced (a COLO primary re-sends its own, see pendingRx()).
   */
  loadState(state: Uint8Array, opts?: LoadStateOptions): Promise<void>;

  /** Frames the guest's NIC transmitted. */
  onTransmit(listener: (frame: Uint8Array) => void): void;
  /** Deliver a frame to the guest's NIC (queued while paused or not ready). */
  deliver(frame: Uint8Array): void;
  /**
   * Copies of the frames delivered but not yet taken by the guest, oldest
   * first: they are not part of saveState(), so a checkpoint sends them
   * after the state (COLO: the secondary gets the primary's queue).
   */
  pendingRx(): Uint8Array[];

  /** Bytes the guest wrote to its serial console. */
  onConsoleOutput(listener: (bytes: Uint8Array) => void): void;
  /** Bytes typed into the guest's serial console. */
  sendConsoleInput(bytes: Uint8Array): void;

  /** How the guest stops (poweroff, reboot) or the engine fails (fault); see EngineEvent. */
  onEvent(listener: (event: EngineEvent) => void): void;

  /** Stop and release everything; idempotent. */
  destroy(): Promise<void>;
}
