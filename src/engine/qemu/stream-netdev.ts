/**
 * The guest NIC's frames between QEMU and the daemon: QEMU's
 * `-netdev stream,server=off,addr.type=fd,addr.str=N` is given one end of a
 * unix socketpair of ours, and each frame crosses it, both ways, as a 4-byte
 * big-endian length followed by the Ethernet frame (QEMU 7.2 net/stream.c,
 * the framing of net/socket.c; measured in ENGINE-NOTES.md "QEMU engine").
 *
 * Why a socketpair and not a socket QEMU connects to: we keep a copy of
 * QEMU's end, so FIONREAD on it tells how many bytes we wrote that QEMU has
 * not read yet. At a checkpoint those frames have not reached the guest and
 * are not in its state; unread() names them, so a COLO primary re-sends
 * them to the secondary (Engine.pendingRx()). Frames QEMU has read but
 * queued inside itself (the guest's receive ring full) stay invisible; the
 * engine avoids making more of them by holding frames while it pauses.
 */
import { Socket } from "node:net";
import { closeEnd, unixStreamPair, unreadBytes, type UnixPair } from "../../sys/index.js";
import { SentFrames } from "./sent-frames.js";

/** 4-byte big-endian length (net/stream.c: `uint32_t len = htonl(size)`). */
const LENGTH_BYTES = 4;
/** Largest frame accepted from QEMU: 64 KiB + headers covers every virtio-net frame without TSO (QEMU's NET_BUFSIZE is 4096 + 65536). */
export const MAX_STREAM_FRAME = 4096 + 65536;
/**
 * Frames remembered for unread(): more than a unix socket's queue can hold
 * (its send buffer, net.core.wmem_default 208 KiB here) plus what Node
 * buffers when the socket is full.
 */
const SENT_LOG_BYTES = 4 * 2 ** 20;

export interface StreamNetdevStats {
  framesFromGuest: number;
  framesToGuest: number;
  /** Frames for the guest dropped because the stream was closed. */
  droppedClosed: number;
  /** unread() found more unread bytes than the frames it remembers. */
  unreadOverflows: number;
}

/** Splits a byte stream into length-prefixed frames; pure, fed any chunking. */
export class FrameSplitter {
  private buffered: Buffer = Buffer.alloc(0);

  constructor(private readonly maxFrame = MAX_STREAM_FRAME) {}

  /** Frames completed by `chunk`; throws RangeError on a frame longer than maxFrame (the stream is then unusable). */
  push(chunk: Uint8Array): Uint8Array[] {
    this.buffered = this.buffered.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.buffered, chunk]);
    const out: Uint8Array[] = [];
    let off = 0;
    while (this.buffered.length - off >= LENGTH_BYTES) {
      const len = this.buffered.readUInt32BE(off);
      if (len > this.maxFrame) throw new RangeError(`frame length ${len} exceeds ${this.maxFrame}`);
      if (this.buffered.length - off - LENGTH_BYTES < len) break;
      out.push(new Uint8Array(this.buffered.subarray(off + LENGTH_BYTES, off + LENGTH_BYTES + len)));
      off += LENGTH_BYTES + len;
    }
    this.buffered = off === 0 ? this.buffered : Buffer.from(this.buffered.subarray(off));
    return out;
  }

  /** Bytes of an incomplete frame held. */
  get pending(): number {
    return this.buffered.length;
  }
}

/** One frame as it goes on the wire. */
export function encodeStreamFrame(frame: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(LENGTH_BYTES + frame.length);
  out.writeUInt32BE(frame.length, 0);
  out.set(frame, LENGTH_BYTES);
  return out;
}

export class StreamNetdev {
  readonly stats: StreamNetdevStats = { framesFromGuest: 0, framesToGuest: 0, droppedClosed: 0, unreadOverflows: 0 };
  private readonly pair: UnixPair;
  private readonly socket: Socket;
  private readonly sent = new SentFrames(SENT_LOG_BYTES);
  private closed = false;

  /**
   * A new socketpair: `qemuFd` is for QEMU (placed in its descriptor table
   * at spawn). `onFrame` gets every frame the guest sent; `onProblem` hears
   * about a broken stream (a bad length from QEMU: the stream is closed).
   */
  constructor(
    readonly name: string,
    private readonly onFrame: (frame: Uint8Array) => void,
    private readonly onProblem: (message: string) => void = () => {},
  ) {
    this.pair = unixStreamPair(name);
    this.socket = new Socket({ fd: this.pair.ours, readable: true, writable: true });
    this.socket.setNoDelay?.(true);
    const splitter = new FrameSplitter();
    this.socket.on("data", (chunk: Buffer) => {
      let frames: Uint8Array[];
      try {
        frames = splitter.push(chunk);
      } catch (e) {
        this.onProblem(`${this.name}: ${(e as Error).message}; stream closed`);
        this.socket.destroy();
        return;
      }
      for (const f of frames) {
        this.stats.framesFromGuest++;
        this.onFrame(f);
      }
    });
    this.socket.on("error", (e) => this.onProblem(`${this.name}: ${e.message}`));
  }

  /** QEMU's end of the pair (this process keeps a copy until close()). */
  get qemuFd(): number {
    return this.pair.theirs;
  }

  get connected(): boolean {
    return !this.closed && !this.socket.destroyed;
  }

  /** Sends a frame to the guest's NIC; dropped (and counted) once the stream is closed. */
  send(frame: Uint8Array): void {
    if (!this.connected) {
      this.stats.droppedClosed++;
      return;
    }
    this.stats.framesToGuest++;
    const wire = encodeStreamFrame(frame);
    this.sent.push(frame.slice(), wire.length);
    this.socket.write(wire);
  }

  /**
   * Frames sent that QEMU has not read in full, oldest first: the bytes
   * Node still buffers plus those queued on QEMU's end.
   */
  unread(): Uint8Array[] {
    if (!this.connected) return [];
    const pending = this.socket.writableLength + unreadBytes(this.pair.theirs, this.name);
    const before = this.sent.overflows;
    const frames = this.sent.unread(pending);
    this.stats.unreadOverflows += this.sent.overflows - before;
    return frames;
  }

  /** Closes our end and our copy of QEMU's; idempotent. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    closeEnd(this.pair.theirs, this.name);
    if (this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      this.socket.once("close", () => resolve());
      this.socket.destroy();
    });
  }
}
