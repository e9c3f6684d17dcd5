import type { BlockBackend } from "../engine.js";

/**
 * Adapts a BlockBackend to the buffer object v86's IDE disk calls
 * (ENGINE-NOTES.md): load(), get_and_cache(), get_from_cache(), get(), set(), byteLength,
 * get_state()/set_state(). v86 raises the completion interrupt before it
 * calls set() and ignores set()'s callback, so writes are synchronous.
 * The disk's contents never enter v86's state: get_state() is empty.
 */
export class V86BlockAdapter {
  onload: ((e: object) => void) | undefined;
  onprogress: ((e: object) => void) | undefined;

  constructor(private readonly backend: BlockBackend) {}

  get byteLength(): number {
    return this.backend.byteLength;
  }

  load(): void {
    this.onload?.({});
  }

  get(start: number, len: number, fn: (data: Uint8Array) => void): void {
    fn(this.backend.read(start, len));
  }

  get_and_cache(start: number, len: number, fn: (data: Uint8Array) => void): void {
    this.get(start, len, fn);
  }

  /** Synchronous read v86 uses for disk geometry (the MBR). */
  get_from_cache(start: number, len: number): Uint8Array {
    return this.backend.read(start, len);
  }

  set(start: number, data: Uint8Array, fn?: () => void): void {
    this.backend.write(start, data);
    fn?.();
  }

  get_buffer(fn: (data: Uint8Array | undefined) => void): void {
    fn(undefined);
  }

  get_state(): unknown[] {
    return [];
  }

  set_state(_state: unknown): void {
    // The disk is not part of the engine state: it is the VM layer's backend.
  }
}
