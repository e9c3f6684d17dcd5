/**
 * A unix socket server for one QEMU peer (its NIC stream, its console):
 * the socket file replaced if stale, one connection at a time, a second
 * one refused; close() drops the peer, stops listening and removes the file.
 */
import { createServer, type Server, type Socket } from "node:net";
import { rm } from "node:fs/promises";

export class SinglePeerListener {
  private server: Server | undefined;
  private peerSocket: Socket | undefined;

  /** `onPeer` gets each accepted connection; `onRefused` hears about a second one while the first is open. */
  constructor(
    readonly socketPath: string,
    private readonly onPeer: (socket: Socket) => void,
    private readonly onRefused: () => void = () => undefined,
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

  /** The connected peer, if any. */
  get peer(): Socket | undefined {
    return this.peerSocket !== undefined && !this.peerSocket.destroyed ? this.peerSocket : undefined;
  }

  private accept(socket: Socket): void {
    if (this.peerSocket !== undefined) {
      this.onRefused();
      socket.destroy();
      return;
    }
    this.peerSocket = socket;
    socket.on("close", () => {
      if (this.peerSocket === socket) this.peerSocket = undefined;
    });
    this.onPeer(socket);
  }

  async close(): Promise<void> {
    this.peerSocket?.destroy();
    this.peerSocket = undefined;
    const server = this.server;
    this.server = undefined;
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(this.socketPath, { force: true });
  }
}
