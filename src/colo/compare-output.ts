/**
 * Output commit in COLO compare mode, on the primary (COLO-PROTOCOL.md §6):
 * the PVM's frames go through the comparator and leave as soon as the SVM
 * produced the same output; the SVM's frames (from the back channel) only
 * match. A difference, a timeout or a full queue asks the checkpoint
 * policy for a checkpoint; after it, held PVM frames leave and queued SVM
 * data is dropped (the SVM now holds the PVM's state).
 *
 * The PVM resumes before the secondary has applied the checkpoint (Xen's
 * order, COLO-PROTOCOL.md §4): from seal() until committed() its frames
 * belong to the next epoch and wait outside the comparator. A checkpoint's
 * release (every held frame) must not take them: the secondary's copy
 * does not hold the state that produced them. They enter the comparator
 * after that release, with the time they were sent (the compare timeout
 * counts from then).
 */
import { Comparator, type ComparatorOptions, type Divergence } from "./net/comparator.js";
import { ResponseTimer } from "./net/response-time.js";
import { monotonicMs, type Clock } from "../sys/clock.js";

export interface OutputCommit {
  /** A frame the PVM sent. */
  output(frame: Uint8Array): void;
  /** The PVM has paused for a checkpoint: frames before this belong to it, frames after it to the next epoch. */
  seal(): void;
  /** The secondary applied the checkpoint sealed last: frames to send now (none of the next epoch's). */
  committed(): Uint8Array[];
  /** The secondary is gone: everything held, to send now. */
  releaseAll(): Uint8Array[];
  stats(): Record<string, unknown>;
}

export class CompareOutput implements OutputCommit {
  private readonly comparator: Comparator;
  /** Between seal() and committed(): the next epoch's PVM frames, with the time each was sent. */
  private nextEpoch: { frame: Uint8Array; at: number }[] | undefined;
  /** The PVM's response times (status `responseMs`): input as mirrored, output as sent. */
  private readonly response = new ResponseTimer();
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

  /** A frame for the PVM (mirrored input): starts a response time. */
  input(frame: Uint8Array): void {
    this.response.input(frame, this.now());
  }

  output(frame: Uint8Array): void {
    this.response.output(frame, this.now());
    if (this.nextEpoch) this.nextEpoch.push({ frame, at: this.now() });
    else this.handle(this.comparator.primary(frame, this.now()), undefined);
  }

  /** A frame the SVM sent (back channel). */
  secondaryOutput(frame: Uint8Array): void {
    this.handle(this.comparator.secondary(frame, this.now()), undefined);
  }

  /** Periodic: a held PVM frame waiting past the compare timeout; none while sealed (committed() releases them). */
  checkExpired(): void {
    if (this.nextEpoch) return;
    const d = this.comparator.expired(this.now());
    if (d) this.divergence(d);
  }

  seal(): void {
    this.nextEpoch ??= [];
  }

  /** Every frame held for the checkpoint, then what the next epoch's frames release once compared (in that order). */
  committed(): Uint8Array[] {
    const out = this.comparator.checkpointed();
    const next = this.nextEpoch ?? [];
    this.nextEpoch = undefined;
    for (const { frame, at } of next) this.handle(this.comparator.primary(frame, at), out);
    return out;
  }

  /** Everything held, in the order the PVM sent it. */
  releaseAll(): Uint8Array[] {
    const out = this.comparator.releaseAll();
    for (const { frame } of this.nextEpoch ?? []) out.push(frame);
    this.nextEpoch = undefined;
    return out;
  }

  stats(): Record<string, unknown> {
    return {
      ...this.comparator.stats(),
      responseMs: this.response.summary(),
      ...(this.nextEpoch ? { nextEpochFrames: this.nextEpoch.length } : {}),
      ...(this.lastDivergence ? { lastDivergence: this.lastDivergence } : {}),
    };
  }

  /** Released frames go to `into` when given (the caller sends them in order), else out at once. */
  private handle(r: { release: Uint8Array[]; divergence?: Divergence }, into: Uint8Array[] | undefined): void {
    if (into) into.push(...r.release);
    else for (const f of r.release) this.send(f);
    if (r.divergence) this.divergence(r.divergence);
  }

  private divergence(d: Divergence): void {
    // Wall clock: an instant shown in `colo status`, never compared with another.
    this.lastDivergence = { ...d, at: new Date().toISOString() };
    this.diverged(d);
  }
}
