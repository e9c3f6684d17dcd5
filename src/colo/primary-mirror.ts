/**
 * Compare mode's input mirroring on the primary (docs/replication.md
 * "Input and output", "One checkpoint"): every frame delivered to the PVM
 * is mirrored to the secondary (NET_FRAME, mirrored input, through the
 * write lock) outside the checkpoint window; inside it (from NEW) new
 * input only goes to the PVM, and right after CHECKPOINT_END the frames
 * the checkpointed PVM had not taken are re-sent: they belong to the
 * secondary's next epoch. Remus mode mirrors nothing.
 */
import type { StreamWriter } from "../state/index.js";
import type { WriteLock } from "./heartbeat.js";
import type { PrimaryOptions, PrimaryVm } from "./primary.js";

/** What mirroring needs of the primary's session. */
export interface MirrorSide {
  readonly vm: PrimaryVm;
  readonly writer: StreamWriter;
  readonly lock: WriteLock;
  readonly opts: Pick<PrimaryOptions, "mode">;
  /** A frame mirrored (`frame`: new input, as the PVM gets it) or re-sent (PrimaryReplicator.mirroredFrames). */
  counted(frame?: Uint8Array): void;
  /** stop() began. */
  stopping(): boolean;
  fail(reason: string): void;
}

export class InputMirror {
  /** Mirror input to the secondary (compare mode, outside the checkpoint window). */
  on = false;

  constructor(private readonly side: MirrorSide) {}

  /** Compare mode: mirror every frame for the PVM to the secondary, then deliver it. */
  private install(): void {
    if (this.side.opts.mode !== "compare") return;
    this.on = true;
    this.side.vm.setInputFilter((frame) => {
      if (this.on) this.mirror(frame);
      return frame;
    });
  }

  private mirror(frame: Uint8Array): void {
    this.side.counted(frame);
    this.side.lock
      .run(() => this.side.writer.writeNetFrame({ direction: "mirrored-input", frame }))
      // Once a stop began, a frame queued behind its END is refused: the stop says why the session ends.
      .catch((err: unknown) => (this.side.stopping() ? undefined : this.side.fail(`mirroring input: ${(err as Error).message}`)));
  }

  /**
   * Right after CHECKPOINT_END, still under the lock: the frames the PVM has
   * been given but not taken belong to the secondary's next epoch. From
   * here on, new input is mirrored as it comes.
   */
  resendQueued(): void {
    if (this.side.opts.mode !== "compare") return;
    this.resend(this.side.vm.engine.pendingRx());
    if (!this.on) this.install();
  }

  /** Right after CHECKPOINT_END, under the lock: `frames`, the input the checkpointed PVM had not taken. */
  resend(frames: readonly Uint8Array[]): void {
    for (const frame of frames) {
      this.side.counted();
      void this.side.writer.writeNetFrame({ direction: "mirrored-input", frame }).catch(() => undefined);
    }
  }
}
