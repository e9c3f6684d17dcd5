/**
 * Output commit for Remus mode (COLO-PROTOCOL.md §4; Remus, NSDI'08): every
 * frame the primary VM sends is held until the checkpoint that covers it
 * has been acknowledged by the secondary (SVM_READY), so the outside world
 * never sees output from a state the secondary could not reproduce.
 *
 * Frames sent during epoch N (after checkpoint N-1's pause, up to
 * checkpoint N's pause) are released when checkpoint N is acknowledged.
 * Memory is bounded: past `maxBytes` held, new frames are dropped and
 * counted, as a full NIC queue drops them (TCP retransmits; a checkpoint
 * soon frees the buffer).
 */
export interface OutputBufferStats {
  heldFrames: number;
  heldBytes: number;
  releasedFrames: number;
  droppedFrames: number;
}

export class OutputBuffer {
  /** Frames of epochs sealed by a checkpoint but not yet acknowledged, by epoch. */
  private readonly sealed = new Map<number, Uint8Array[]>();
  private open: Uint8Array[] = [];
  private epoch = 0;
  private bytes = 0;
  private released = 0;
  private dropped = 0;

  constructor(private readonly maxBytes = 16 * 2 ** 20) {}

  hold(frame: Uint8Array): void {
    if (this.bytes + frame.length > this.maxBytes) {
      this.dropped++;
      return;
    }
    this.open.push(frame);
    this.bytes += frame.length;
  }

  /** The guest is paused for a checkpoint: frames so far belong to it. Returns its epoch. */
  seal(): number {
    const epoch = this.epoch++;
    this.sealed.set(epoch, this.open);
    this.open = [];
    return epoch;
  }

  /** Checkpoint `epoch` is acknowledged: its frames (and older ones) may go out, in order. */
  release(epoch: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (const [e, frames] of [...this.sealed].sort((a, b) => a[0] - b[0])) {
      if (e > epoch) break;
      out.push(...frames);
      this.sealed.delete(e);
    }
    this.account(out);
    return out;
  }

  /** Replication stopped (secondary lost, failover): everything goes out, in order. */
  releaseAll(): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (const [, frames] of [...this.sealed].sort((a, b) => a[0] - b[0])) out.push(...frames);
    out.push(...this.open);
    this.sealed.clear();
    this.open = [];
    this.account(out);
    return out;
  }

  private account(out: Uint8Array[]): void {
    for (const f of out) this.bytes -= f.length;
    this.released += out.length;
  }

  stats(): OutputBufferStats {
    let held = this.open.length;
    for (const frames of this.sealed.values()) held += frames.length;
    return { heldFrames: held, heldBytes: this.bytes, releasedFrames: this.released, droppedFrames: this.dropped };
  }
}
