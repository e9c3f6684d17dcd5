/**
 * The guest NIC's frames between QEMU and the daemon: QEMU's
 * `-netdev stream,server=off,addr.type=unix,addr.path=P` connects to a unix
 * socket we listen on, and each frame crosses it, both ways, as a 4-byte
 * big-endian length followed by the Ethernet frame (QEMU 7.2 net/stream.c,
 * the framing of net/socket.c; measured in ENGINE-NOTES.md "QEMU engine").
 *
 * One QEMU connects per server; a second connection while one is open is
 * refused (closed at once). Frames for the guest written before QEMU has
 * connected are dropped and counted: a NIC without a link loses frames,
 * and the layer above (the proxy) decides what must be re-sent.
 */

import type { Socket } from "node:net";
import { SinglePeerListener } from "./unix-listener.js";

/** 4-byte big-endian length (net/stream.c: `uint32_t len = htonl(size)`). */
const LENGTH_BYTES = 4;
/** Largest frame accepted from QEMU: 64 KiB + headers covers every virtio-net frame without TSO (QEMU's NET_BUFSIZE is 4096 + 65536). */
export const MAX_STREAM_FRAME = 4096 + 65536;

export interface StreamNetdevStats {
  framesFromGuest: number;
  framesToGuest: number;
  /** Frames for the guest dropped because QEMU was not connected. */
  droppedNotConnected: number;
  connections: number;
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
  readonly stats: StreamNetdevStats = { framesFromGuest: 0, framesToGuest: 0, droppedNotConnected: 0, connections: 0 };
  private readonly listener: SinglePeerListener;
  private readonly connectedWaiters: Array<() => void> = [];

  /**
   * `onFrame` gets every frame the guest sent; `onProblem` hears about a
   * broken stream (a bad length from QEMU: the connection is closed).
   */
  constructor(
    readonly socketPath: string,
    private readonly onFrame: (frame: Uint8Array) => void,
    private readonly onProblem: (message: string) => void = () => {},
  ) {
    this.listener = new SinglePeerListener(
      socketPath,
      (socket) => this.accept(socket),
      () => this.onProblem(`${socketPath}: a second connection while QEMU's is open; refused`),
    );
  }

  /** Listens on socketPath (removing a stale socket file first). */
  listen(): Promise<void> {
    return this.listener.listen();
  }

  get connected(): boolean {
    return this.listener.peer !== undefined;
  }

  /** Resolves once QEMU has connected (at once if it has). */
  whenConnected(): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((resolve) => this.connectedWaiters.push(resolve));
  }

  private accept(socket: Socket): void {
    this.stats.connections++;
    socket.setNoDelay?.(true);
    const splitter = new FrameSplitter();
    socket.on("data", (chunk: Buffer) => {
      let frames: Uint8Array[];
      try {
        frames = splitter.push(chunk);
      } catch (e) {
        this.onProblem(`${this.socketPath}: ${(e as Error).message}; connection closed`);
        socket.destroy();
        return;
      }
      for (const f of frames) {
        this.stats.framesFromGuest++;
        this.onFrame(f);
      }
    });
    socket.on("error", (e) => this.onProblem(`${this.socketPath}: ${e.message}`));
    for (const w of this.connectedWaiters.splice(0)) w();
  }

  /** Sends a frame to the guest's NIC; dropped (and counted) while QEMU is not connected. */
  send(frame: Uint8Array): void {
    const peer = this.listener.peer;
    if (peer === undefined) {
      this.stats.droppedNotConnected++;
      return;
    }
    this.stats.framesToGuest++;
    peer.write(encodeStreamFrame(frame));
  }

  /** Closes the connection and the listener, removes the socket file; idempotent. */
  close(): Promise<void> {
    return this.listener.close();
  }
}
