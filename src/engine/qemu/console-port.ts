/**
 * The guest's serial console between QEMU and the daemon: QEMU's
 * `-chardev socket,server=off,path=P` connects to a unix socket we listen
 * on and the bytes of the guest's ttyS0 cross it both ways, unframed.
 * One QEMU connects per port; a second connection is refused.
 */

import type { Socket } from "node:net";
import { SinglePeerListener } from "./unix-listener.js";

export class ConsolePort {
  private readonly listener: SinglePeerListener;
  /** Input typed before QEMU connected, sent when it does. */
  private pendingInput: Buffer[] = [];

  constructor(
    readonly socketPath: string,
    private readonly onOutput: (bytes: Uint8Array) => void,
  ) {
    this.listener = new SinglePeerListener(socketPath, (socket) => this.accept(socket));
  }

  listen(): Promise<void> {
    return this.listener.listen();
  }

  private accept(socket: Socket): void {
    socket.on("data", (chunk: Buffer) => this.onOutput(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length)));
    socket.on("error", () => undefined); // the close that follows is what matters
    for (const b of this.pendingInput.splice(0)) socket.write(b);
  }

  send(bytes: Uint8Array): void {
    const b = Buffer.from(bytes);
    const peer = this.listener.peer;
    if (peer === undefined) this.pendingInput.push(b);
    else peer.write(b);
  }

  close(): Promise<void> {
    return this.listener.close();
  }
}
