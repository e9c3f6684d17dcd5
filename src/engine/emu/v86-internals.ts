/**
 * The few v86 internals the emu engine touches, typed narrowly. v86 0.5.462
 * exposes no public API for these (RAM view, RAM-less state, the NIC's MAC,
 * RX ring state, the guest's reset requests, failures of its main loop, its clock); everything that reaches past the public API goes through
 * this file so a v86 upgrade has one place to check.
 */
import type { V86 } from "v86";

export interface V86Bitmap {
  get_buffer(): ArrayBuffer;
}

export interface V86VirtQueue {
  is_configured(): unknown;
  has_request(): boolean;
}

export interface V86VirtioNet {
  mac: Uint8Array;
  virtio: { device_status: number; queues: V86VirtQueue[] };
}

export interface V86Cpu {
  /**
   * Guest RAM as v86 made it at start. It is a view of wasm memory and is
   * detached (length 0) when the wasm memory grows (the JIT allocates): use
   * it only for its byteOffset, and view `wasm_memory.buffer` afresh.
   */
  mem8: Uint8Array;
  wasm_memory: { readonly buffer: ArrayBuffer };
  pack_memory(): { bitmap: V86Bitmap; packed_memory: Uint8Array };
  unpack_memory(bitmap: unknown, packed: Uint8Array): void;
  /** Drops every compiled block (set_state calls it last). */
  jit_clear_cache(): void;
  /** Drops the compiled blocks of physical range [start, end) (what v86's own memory writes call). */
  jit_dirty_cache(start: number, end: number): void;
  devices: { virtio_net?: V86VirtioNet; pci: V86Pci };
  /**
   * What v86 calls when the guest asks for a reset (PS/2 controller command
   * 0xFE, PCI reset port 0xCF9): it resets the CPU and reloads the BIOS,
   * which does not boot a bzImage or Multiboot kernel again (v86 wrote it
   * into RAM once, at start). The emu engine replaces it.
   */
  reboot_internal(): void;
  /** The vCPU is halted (1 byte in wasm memory, through a proxy that survives memory growth). */
  in_hlt: Uint8Array;
  /** EFLAGS (1 u32 in wasm memory, same proxy); IF is not one of v86's lazily computed flags. */
  flags: Int32Array;
}

/** EFLAGS.IF (Intel SDM vol. 1 §3.4.3): halted with it clear, a vCPU never runs again (v86 has no NMI). */
export const EFLAGS_IF = 1 << 9;

/**
 * v86's PCI bus. Its set_state() re-maps every I/O BAR whose config-space
 * value has bit 0 set, but the IDE controller's BAR0/BAR1 are holes in
 * `pci_bars` with value 1: restoring a state then dereferences undefined.
 */
export interface V86Pci {
  devices: ({ pci_bars: (object | null | undefined)[] } | undefined)[];
  device_spaces: (Int32Array | undefined)[];
  set_state(state: unknown[]): void;
}

/** Offset (in u32s) of BAR0 in a PCI type-0 config header (PCI Local Bus Spec 3.0 §6.1). */
export const PCI_BAR0_DWORD = 4;

export interface V86Bus {
  send(name: string, data?: unknown): void;
  /**
   * What V86.add_listener() does, for events its typings do not list:
   * "cpu-event-halt", which the wasm CPU sends when the guest runs `hlt`
   * with interrupts off ("execution can never resume", v86's cpu.rs).
   */
  register(name: string, listener: () => void, context: object): void;
}

/**
 * v86's main loop object (src/main.js): runs `cpu.main_loop()` in ticks;
 * between ticks it is `idle`, waiting up to the guest's next timer event
 * (`yield(ms, tick)` → `yield_callback(tick)`). `stop()` only sets
 * `stopping`: the loop notices at its next tick.
 */
export interface V86Main {
  cpu: V86Cpu;
  /** The bus v86's own code sends on ("emulator-stopped" at the end of a stop). */
  bus: V86Bus;
  idle: boolean;
  running: boolean;
  stopping: boolean;
  tick_counter: number;
  yield_callback(tick: number): void;
  /**
   * One tick: `cpu.main_loop()` (every guest instruction runs inside it),
   * then the next tick is scheduled. An exception thrown here (a wasm trap:
   * v86's Rust code panics on paths it does not implement, e.g. a triple
   * fault) escapes to the event loop and schedules no further tick.
   */
  do_tick(): void;
}

export interface V86WithInternals {
  v86: V86Main;
  bus: V86Bus;
}

export function internals(emulator: V86): V86WithInternals {
  const e = emulator as unknown as Partial<V86WithInternals>;
  if (!e.v86 || !e.v86.cpu || !e.bus) {
    throw new Error("v86 internals not found (unsupported v86 version?)");
  }
  return e as V86WithInternals;
}

/**
 * v86's clock: `microtick`, a static of its main loop's class (the
 * constructor of `V86WithInternals.v86`), bound to `performance.now` once,
 * when libv86.mjs evaluates. Its PIT, RTC, APIC and ACPI timers and the
 * guest's TSC read it; the emu engine makes it the guest clock (guest-clock.ts).
 */
export function microtickOf(inner: V86WithInternals): () => number {
  const microtick = (inner.v86.constructor as unknown as { microtick?: unknown }).microtick;
  if (typeof microtick !== "function") throw new Error("v86's microtick not found (unsupported v86 version?)");
  return microtick as () => number;
}

/** virtio 1.x device status bit DRIVER_OK (virtio spec §2.1). */
export const VIRTIO_STATUS_DRIVER_OK = 4;

/** Index of the receive queue of virtio-net's first queue pair (virtio spec §5.1.2). */
export const VIRTIO_NET_RX_QUEUE = 0;
