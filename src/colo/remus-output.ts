/**
 * Output commit in Remus mode: every PVM frame waits for the checkpoint
 * that covers it (OutputBuffer, per epoch).
 */
import type { OutputCommit } from "./compare-output.js";
import { OutputBuffer } from "./output-buffer.js";

export class RemusOutput implements OutputCommit {
  readonly buffer = new OutputBuffer();
  private sealedEpoch: number | undefined;

  output(frame: Uint8Array): void {
    this.buffer.hold(frame);
  }

  seal(): void {
    this.sealedEpoch = this.buffer.seal();
  }

  committed(): Uint8Array[] {
    const epoch = this.sealedEpoch;
    this.sealedEpoch = undefined;
    return epoch === undefined ? [] : this.buffer.release(epoch);
  }

  releaseAll(): Uint8Array[] {
    return this.buffer.releaseAll();
  }

  stats(): Record<string, unknown> {
    return { ...this.buffer.stats() };
  }
}
