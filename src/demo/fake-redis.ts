// A tiny in-process Redis stand-in for tests: PING, SET, GET, MGET, INCR, DEL
// over RESP2, backed by a Map. `onCommand` is the test seam: it sees each
// command and may make the server reset the connection (before or after
// applying it) or never answer.
import { createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { encodeArray, encodeBulk, encodeError, encodeInteger, encodeSimple, RespParser } from "./resp.js";

/** `reply` (default): apply and answer; `reset-before`/`reset-after`: RST without answer; `hang`: never answer. */
export type FakeAction = "reply" | "reset-before" | "reset-after" | "hang";

export class FakeRedis {
  readonly data = new Map<string, string>();
  /** Commands received, over all connections. */
  commands = 0;
  connectionsAccepted = 0;
  onCommand: ((args: string[], index: number) => FakeAction | void) | null = null;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();

  constructor() {
    this.server = createServer((socket) => this.serve(socket));
  }

  /** Listens on 127.0.0.1 and an ephemeral port; resolves to the port. */
  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(0, "127.0.0.1", () => resolve((this.server.address() as AddressInfo).port));
    });
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private serve(socket: Socket): void {
    this.connectionsAccepted++;
    this.sockets.add(socket);
    socket.setNoDelay(true);
    socket.on("close", () => this.sockets.delete(socket));
    socket.on("error", () => {});
    const parser = new RespParser();
    socket.on("data", (chunk: Buffer) => {
      let commands;
      try {
        commands = parser.feed(chunk);
      } catch {
        socket.destroy();
        return;
      }
      for (const command of commands) {
        if (socket.destroyed) return;
        if (!Array.isArray(command) || !command.every((a): a is string => typeof a === "string") || command.length === 0) {
          socket.write(encodeError("ERR expected an array of bulk strings"));
          continue;
        }
        const action = this.onCommand?.(command, this.commands++) ?? "reply";
        if (action === "hang") continue;
        if (action === "reset-before") {
          socket.resetAndDestroy();
          return;
        }
        const reply = this.execute(command);
        if (action === "reset-after") {
          socket.resetAndDestroy();
          return;
        }
        socket.write(reply);
      }
    });
  }

  private execute(args: string[]): Buffer {
    const [name, ...rest] = args;
    const arity = (n: number): boolean => rest.length === n;
    switch (name!.toUpperCase()) {
      case "PING":
        return encodeSimple("PONG");
      case "SET":
        if (!arity(2)) break;
        this.data.set(rest[0]!, rest[1]!);
        return encodeSimple("OK");
      case "GET":
        if (!arity(1)) break;
        return encodeBulk(this.data.get(rest[0]!) ?? null);
      case "MGET":
        if (rest.length === 0) break;
        return encodeArray(rest.map((k) => encodeBulk(this.data.get(k) ?? null)));
      case "DEL":
        return encodeInteger(rest.filter((k) => this.data.delete(k)).length);
      case "INCR": {
        if (!arity(1)) break;
        const old = this.data.get(rest[0]!) ?? "0";
        if (!/^-?\d+$/.test(old)) return encodeError("ERR value is not an integer or out of range");
        const value = Number(old) + 1;
        this.data.set(rest[0]!, String(value));
        return encodeInteger(value);
      }
      default:
        return encodeError(`ERR unknown command '${name}'`);
    }
    return encodeError(`ERR wrong number of arguments for '${name}' command`);
  }
}
