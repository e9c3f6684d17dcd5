/**
 * Output commit in COLO compare mode, on the primary (COLO-PROTOCOL.md §6):
 * the PVM's frames go through the comparator and leave as soon as the SVM
 * produced the same output; the SVM's frames (from the back channel) only
 * match. A difference, a timeout or a full queue asks the checkpoint
 * policy for a checkpoint; after it, held PVM frames leave and queued SVM
 * data is dropped (the SVM now holds the PVM's state).
 */
import { Comparator, type ComparatorOptions, type Divergence } from "./net/comparator.js";
import { monotonicMs, type Clock } from "../sys/clock.js";

export interface OutputCommit {
  /** A frame the PVM sent. */
  output(frame: Uint8Array): void;
  /** The PVM has paused for a checkpoint (frames before this belong to it). */
  seal(): void;
  /** The secondary applied the checkpoint: frames to send now. */
  committed(): Uint8Array[];
  /** The secondary is gone: everything held, to send now. */
  releaseAll(): Uint8Array[];
  stats(): Record<string, unknown>;
}

export class CompareOutput implements OutputCommit {
  private readonly comparator: Comparator;
  /** The last divergence; `at`: an instant for the operator (wall clock, ISO 8601). */
  lastDivergence: (Divergence & { at: string }) | undefined;

  constructor(
    options: ComparatorOptions,
    private readonly send: (frame: Uint8Array) => void,
    /** Asks for a checkpoint (its reason is the divergence's). */
    private readonly diverged: (divergence: Divergence) => void,
    /** The comparator's time (its compare timeout): the monotonic clock. */
    private readonly now: Clock = monotonicMs,
  ) {
    this.comparator = new Comparator(options);
  }

  output(frame: Uint8Array): void {
    this.handle(this.comparator.primary(frame, this.now()));
  }

  /** A frame the SVM sent (back channel). */
  secondaryOutput(frame: Uint8Array): void {
    this.handle(this.comparator.secondary(frame, this.now()));
  }

  /** Periodic: a held PVM frame waiting past the compare timeout. */
  checkExpired(): void {
    const d = this.comparator.expired(this.now());
    if (d) this.divergence(d);
  }

  seal(): void {
    // Compare mode holds per flow, not per epoch: nothing to mark.
  }

  committed(): Uint8Array[] {
    return this.comparator.checkpointed();
  }

  releaseAll(): Uint8Array[] {
    return this.comparator.releaseAll();
  }

  stats(): Record<string, unknown> {
    return { ...this.comparator.stats(), ...(this.lastDivergence ? { lastDivergence: this.lastDivergence } : {}) };
  }

  private handle(r: { release: Uint8Array[]; divergence?: Divergence }): void {
    for (const f of r.release) this.send(f);
    if (r.divergence) this.divergence(r.divergence);
  }

  private divergence(d: Divergence): void {
    // Wall clock: an instant shown in `colo status`, never compared with another.
    this.lastDivergence = { ...d, at: new Date().toISOString() };
    this.diverged(d);
  }
}
