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
  /** Frames from `head` on are held; those before it are forgotten (dropped in bulk, not one shift() each). */
  private frames: Array<{ frame: Uint8Array; wireBytes: number }> = [];
  private head = 0;
  private bytes = 0;
  /** Times unread() was asked for more bytes than the log holds. */
  overflows = 0;

  constructor(private readonly limitBytes: number) {}

  /** Records a frame that took `wireBytes` on the stream (its header included). */
  push(frame: Uint8Array, wireBytes: number): void {
    this.frames.push({ frame, wireBytes });
    this.bytes += wireBytes;
    // shift() moves every entry: with 4 MiB of small frames (tens of thousands) that was 3% of a loaded daemon's CPU.
    while (this.frames.length - this.head > 1 && this.bytes - (this.frames[this.head]?.wireBytes ?? 0) >= this.limitBytes) {
      this.bytes -= this.frames[this.head]?.wireBytes ?? 0;
      this.head++;
    }
    if (this.head > 1024 && this.head * 2 > this.frames.length) {
      this.frames = this.frames.slice(this.head);
      this.head = 0;
    }
  }

  /** The frames that the last `unreadBytes` of the stream belong to, oldest first (copies). */
  unread(unreadBytes: number): Uint8Array[] {
    if (unreadBytes <= 0) return [];
    if (unreadBytes > this.bytes) this.overflows++;
    let covered = 0;
    let i = this.frames.length;
    while (i > this.head && covered < unreadBytes) {
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
