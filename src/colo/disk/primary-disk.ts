/**
 * The primary's disk (COLO-PROTOCOL.md §7): the VM's own backend, with every
 * write also handed, numbered, to the replication session, which sends it to
 * the secondary's pending log. A checkpoint records `lastSeq` at the moment
 * the PVM is paused: the secondary then applies exactly the writes up to it.
 *
 * Each write lands locally first (the guest's I/O never waits for the
 * secondary), then goes to `forward` with
 * the next seq (1, 2, ... from each `startForwarding`). `forward` gets a
 * private copy of the bytes, which it may keep (the emulator reuses its
 * buffers). A `forward` that throws means the secondary is lost: forwarding
 * stops, the guest's write still succeeds, and `onForwardError` hears of it
 * (the session then continues unprotected, §5 "P continues").
 */
import type { BlockBackend } from "../../engine/engine.js";
import { DiskReplicationError } from "./errors.js";

/** Sends one PVM write to the secondary (must not block; queue it). */
export type ForwardWrite = (seq: number, offset: number, data: Uint8Array) => void;

export interface PrimaryDiskOptions {
  /** Forward from the start (same as calling startForwarding(forward) at once). */
  forward?: ForwardWrite;
  /** `forward` threw; forwarding has stopped. */
  onForwardError?: (err: unknown) => void;
}

export interface PrimaryDiskStats {
  forwarding: boolean;
  lastSeq: number;
  reads: number;
  bytesRead: number;
  writes: number;
  bytesWritten: number;
  forwardedWrites: number;
  forwardedBytes: number;
  /** Times `forward` threw (each stops forwarding). */
  forwardErrors: number;
}

export class PrimaryDisk implements BlockBackend {
  readonly byteLength: number;
  private forward: ForwardWrite | undefined;
  private readonly onForwardError: ((err: unknown) => void) | undefined;
  private seq = 0;
  private readonly counters = {
    reads: 0,
    bytesRead: 0,
    writes: 0,
    bytesWritten: 0,
    forwardedWrites: 0,
    forwardedBytes: 0,
    forwardErrors: 0,
  };

  constructor(
    private readonly local: BlockBackend,
    opts: PrimaryDiskOptions = {},
  ) {
    this.byteLength = local.byteLength;
    this.onForwardError = opts.onForwardError;
    if (opts.forward !== undefined) this.startForwarding(opts.forward);
  }

  get forwarding(): boolean {
    return this.forward !== undefined;
  }

  /** Seq of the last write forwarded in this forwarding session (0 before the first); a checkpoint records it. */
  get lastSeq(): number {
    return this.seq;
  }

  read(offset: number, length: number): Uint8Array {
    const bytes = this.local.read(offset, length);
    this.counters.reads++;
    this.counters.bytesRead += length;
    return bytes;
  }

  write(offset: number, data: Uint8Array): void {
    this.local.write(offset, data);
    this.counters.writes++;
    this.counters.bytesWritten += data.length;
    const forward = this.forward;
    if (forward === undefined) return;
    const copy = new Uint8Array(data.length);
    copy.set(data);
    const seq = this.seq + 1;
    this.seq = seq;
    try {
      forward(seq, offset, copy);
    } catch (err) {
      this.forward = undefined;
      this.counters.forwardErrors++;
      this.onForwardError?.(err);
      return;
    }
    this.counters.forwardedWrites++;
    this.counters.forwardedBytes += data.length;
  }

  /**
   * Starts a forwarding session (a new secondary): seqs restart at 1. Start it
   * before the initial sync reads the first chunk (secondary-disk.ts).
   */
  startForwarding(forward: ForwardWrite): void {
    if (this.forward !== undefined) {
      throw new DiskReplicationError("primary disk", "STATE", "already forwarding (stopForwarding() first)");
    }
    this.forward = forward;
    this.seq = 0;
  }

  /** The secondary is lost (or replication ends): writes stay local only. `lastSeq` keeps its value. */
  stopForwarding(): void {
    this.forward = undefined;
  }

  stats(): PrimaryDiskStats {
    return { forwarding: this.forwarding, lastSeq: this.seq, ...this.counters };
  }
}
