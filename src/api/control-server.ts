import { createServer, type Server, type Socket } from "node:net";
import { unlinkSync } from "node:fs";
import { MAX_REQUEST_BYTES, parseRequest, type ControlRequest, type ControlResponse } from "./protocol.js";

/** What the daemon does for each request. */
export interface ControlHandler {
  /** `emit` sends a progress event line before the response (save, migrate). */
  handle(request: Exclude<ControlRequest, { op: "console" }>, emit: (event: unknown) => void): Promise<unknown>;
  /**
   * Hands the socket over for raw console traffic; the handler owns it now.
   * It is paused: attach listeners, then resume() it.
   */
  attachConsole(socket: Socket, replay: boolean): void;
}

function send(socket: Socket, response: ControlResponse): void {
  socket.write(JSON.stringify(response) + "\n");
}

/**
 * The per-VM control socket server. A malformed request gets an error
 * response naming what is wrong and the connection is closed; it never
 * affects the VM.
 */
export class ControlServer {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();

  private constructor(
    readonly path: string,
    private readonly handler: ControlHandler,
  ) {
    this.server = createServer((socket) => this.onConnection(socket));
  }

  static async listen(path: string, handler: ControlHandler): Promise<ControlServer> {
    const s = new ControlServer(path, handler);
    await new Promise<void>((resolve, reject) => {
      s.server.once("error", reject);
      s.server.listen(path, () => {
        s.server.off("error", reject);
        resolve();
      });
    });
    return s;
  }

  private onConnection(socket: Socket): void {
    this.sockets.add(socket);
    socket.on("close", () => this.sockets.delete(socket));
    socket.on("error", () => socket.destroy());
    let buffered = "";
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      const nl = buffered.indexOf("\n");
      if (nl < 0) {
        if (buffered.length > MAX_REQUEST_BYTES) {
          socket.off("data", onData);
          send(socket, { ok: false, error: `request longer than ${MAX_REQUEST_BYTES} bytes` });
          socket.end();
        }
        return;
      }
      socket.off("data", onData);
      const line = buffered.slice(0, nl);
      const rest = buffered.slice(nl + 1);
      let request: ControlRequest;
      try {
        request = parseRequest(line);
      } catch (err) {
        send(socket, { ok: false, error: (err as Error).message });
        socket.end();
        return;
      }
      if (request.op === "console") {
        send(socket, { ok: true });
        socket.pause();
        if (rest.length > 0) socket.unshift(Buffer.from(rest, "utf8"));
        this.handler.attachConsole(socket, request.replay ?? true);
        return;
      }
      const emit = (event: unknown) => {
        if (!socket.destroyed) socket.write(JSON.stringify({ event }) + "\n");
      };
      this.handler.handle(request, emit).then(
        (result) => {
          send(socket, result === undefined ? { ok: true } : { ok: true, result });
          socket.end();
        },
        (err: unknown) => {
          send(socket, { ok: false, error: err instanceof Error ? err.message : String(err) });
          socket.end();
        },
      );
    };
    socket.on("data", onData);
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    try {
      unlinkSync(this.path);
    } catch {
      // already gone
    }
  }
}
