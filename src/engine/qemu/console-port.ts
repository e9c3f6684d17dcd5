/**
 * The guest's serial console between QEMU and the daemon: QEMU's
 * `-chardev socket,server=off,path=P` connects to a unix socket we listen
 * on and the bytes of the guest's ttyS0 cross it both ways, unframed.
 * One QEMU connects per port; a second connection is refused.
 */

import { createServer, type Server, type Socket } from "node:net";
import { rm } from "node:fs/promises";

export class ConsolePort {
  private server: Server | undefined;
  private peer: Socket | undefined;
  /** Input typed before QEMU connected, sent when it does. */
  private pendingInput: Buffer[] = [];

  constructor(
    readonly socketPath: string,
    private readonly onOutput: (bytes: Uint8Array) => void,
  ) {}

  async listen(): Promise<void> {
    await rm(this.socketPath, { force: true });
    const server = createServer((socket) => this.accept(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.socketPath, () => {
        server.off("error", reject);
        resolve();
      });
    });
  }

  private accept(socket: Socket): void {
    if (this.peer !== undefined) {
      socket.destroy();
      return;
    }
    this.peer = socket;
    socket.on("data", (chunk: Buffer) => this.onOutput(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length)));
    socket.on("error", () => undefined); // the close that follows is what matters
    socket.on("close", () => {
      if (this.peer === socket) this.peer = undefined;
    });
    for (const b of this.pendingInput.splice(0)) socket.write(b);
  }

  send(bytes: Uint8Array): void {
    const b = Buffer.from(bytes);
    if (this.peer === undefined || this.peer.destroyed) this.pendingInput.push(b);
    else this.peer.write(b);
  }

  async close(): Promise<void> {
    this.peer?.destroy();
    this.peer = undefined;
    const server = this.server;
    this.server = undefined;
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(this.socketPath, { force: true });
  }
}
