/**
 * The frames recently written to a byte stream, newest last, with their
 * size on the wire: given how many bytes at the end of the stream the
 * reader has not read yet, which frames those bytes belong to. A frame
 * the reader has read only part of counts as unread (it has not reached
 * the guest).
 *
 * Bounded: the oldest frames are forgotten once the log holds more than
 * `limitBytes` of wire bytes; an unread count larger than the log is
 * answered with the whole log and counted in `overflows`.
 */
export class SentFrames {
  private readonly frames: Array<{ frame: Uint8Array; wireBytes: number }> = [];
  private bytes = 0;
  /** Times unread() was asked for more bytes than the log holds. */
  overflows = 0;

  constructor(private readonly limitBytes: number) {}

  /** Records a frame that took `wireBytes` on the stream (its header included). */
  push(frame: Uint8Array, wireBytes: number): void {
    this.frames.push({ frame, wireBytes });
    this.bytes += wireBytes;
    while (this.frames.length > 1 && this.bytes - (this.frames[0]?.wireBytes ?? 0) >= this.limitBytes) {
      const old = this.frames.shift();
      if (old !== undefined) this.bytes -= old.wireBytes;
    }
  }

  /** The frames that the last `unreadBytes` of the stream belong to, oldest first (copies). */
  unread(unreadBytes: number): Uint8Array[] {
    if (unreadBytes <= 0) return [];
    if (unreadBytes > this.bytes) this.overflows++;
    let covered = 0;
    let i = this.frames.length;
    while (i > 0 && covered < unreadBytes) {
      i--;
      covered += this.frames[i]?.wireBytes ?? 0;
    }
    return this.frames.slice(i).map((f) => f.frame.slice());
  }

  /** Wire bytes held. */
  get heldBytes(): number {
    return this.bytes;
  }
}
