/**
 * An engine that runs nothing, for tests of the layers above (src/vm,
 * src/api): it keeps the Engine contract's bookkeeping (running, RAM,
 * listeners), records what it was asked, and raises engine events on
 * demand (emit()), the way a guest that powers off, reboots or faults
 * would make a real engine raise them.
 */
import { PAGE_SIZE, type Engine, type EngineEvent, type EngineId, type LoadStateOptions, type MachineSpec } from "../engine.js";
import { EngineError } from "../errors.js";

export class FakeEngine implements Engine {
  readonly stateFormatVersion = 1;
  /** What a receiving engine must match ("fake emu 1" unless a test sets another, or undefined as a not-yet-started qemu). */
  compatibility: string | undefined;
  readonly memoryBytes: number;
  readonly pageCount: number;
  /** Calls made, in order: "start", "start-paused", "pause", "resume", "destroy". */
  readonly calls: string[] = [];
  /** Every loadState(), in order: the state and the changedPages it was given (undefined: a whole machine). */
  readonly loads: { state: Uint8Array; changedPages: number[] | undefined }[] = [];
  /** Every pagesCopied(), in order. */
  readonly copied: number[][] = [];
  /** takeDirtyPages() calls; it returns the pages passed to markDirty() since the previous one. */
  dirtyTakes = 0;
  private readonly dirty = new Set<number>();
  private isRunning = false;
  private started = false;
  private destroyed = false;
  private readonly memory: Uint8Array;
  private readonly eventListeners: ((event: EngineEvent) => void)[] = [];

  constructor(
    readonly spec: MachineSpec,
    readonly id: EngineId = "emu",
  ) {
    this.memoryBytes = spec.memoryBytes;
    this.pageCount = spec.memoryBytes / PAGE_SIZE;
    this.memory = new Uint8Array(spec.memoryBytes);
    this.compatibility = `fake ${id} 1`;
  }

  get running(): boolean {
    return this.isRunning;
  }

  get isDestroyed(): boolean {
    return this.destroyed;
  }

  private alive(): void {
    if (this.destroyed) throw new EngineError(this.id, "DESTROYED", "engine destroyed");
    if (!this.started) throw new EngineError(this.id, "NOT_STARTED", "machine not started");
  }

  async start(opts: { paused?: boolean } = {}): Promise<void> {
    if (this.started) throw new EngineError(this.id, "BAD_SPEC", "already started");
    this.started = true;
    this.calls.push(opts.paused ? "start-paused" : "start");
    this.isRunning = !opts.paused;
    await Promise.resolve();
  }

  async pause(): Promise<void> {
    this.alive();
    this.calls.push("pause");
    this.isRunning = false;
    await Promise.resolve();
  }

  async resume(): Promise<void> {
    this.alive();
    this.calls.push("resume");
    this.isRunning = true;
    await Promise.resolve();
  }

  ram(): Uint8Array {
    return this.memory;
  }

  takeDirtyPages(): Uint32Array {
    this.dirtyTakes++;
    const pfns = Uint32Array.from(this.dirty).sort();
    this.dirty.clear();
    return pfns;
  }

  markDirty(pfn: number): void {
    this.dirty.add(pfn);
  }

  pagesCopied(pfns: ArrayLike<number>): void {
    this.copied.push(Array.from(pfns));
  }

  async saveState(): Promise<Uint8Array> {
    this.alive();
    return Promise.resolve(new Uint8Array(1));
  }

  async loadState(state: Uint8Array, opts: LoadStateOptions = {}): Promise<void> {
    this.alive();
    this.loads.push({ state: Uint8Array.from(state), changedPages: opts.changedPages === undefined ? undefined : Array.from(opts.changedPages) });
    await Promise.resolve();
  }

  onTransmit(): void {}

  deliver(): void {}

  pendingRx(): Uint8Array[] {
    return [];
  }

  onConsoleOutput(): void {}

  sendConsoleInput(): void {}

  onEvent(listener: (event: EngineEvent) => void): void {
    this.eventListeners.push(listener);
  }

  /** Raise an event as a real engine would (after a fault it no longer runs). */
  emit(event: EngineEvent): void {
    if (event.kind === "fault") this.isRunning = false;
    for (const l of this.eventListeners) l(event);
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    this.isRunning = false;
    this.calls.push("destroy");
    await Promise.resolve();
  }
}
