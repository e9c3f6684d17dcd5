// A minimal RESP2 client connection over node:net: send a command, await its
// reply, with a per-command timeout. No reconnection here (the caller decides).
import { createConnection, type Socket } from "node:net";
import { encodeCommand, RespParser, type RespValue } from "./resp.js";

/**
 * Why a connection failed. `ECONNRESET`/`EPIPE`/`CLOSED` (closed by the peer
 * with a command outstanding) are resets; `TIMEOUT` is a command without
 * reply in time; `CONNECT_TIMEOUT` a connect without answer in time; other
 * codes are the socket's own (`ECONNREFUSED`, `EHOSTUNREACH`, ...).
 */
export class RespConnectionError extends Error {
  override name = "RespConnectionError";
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }

  get isReset(): boolean {
    return this.code === "ECONNRESET" || this.code === "EPIPE" || this.code === "CLOSED";
  }
}

interface Pending {
  resolve: (value: RespValue) => void;
  reject: (err: RespConnectionError) => void;
}

export class RespConnection {
  private readonly parser = new RespParser();
  private readonly pending: Pending[] = [];
  private failure: RespConnectionError | null = null;

  private constructor(private readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err: NodeJS.ErrnoException) => {
      this.fail(new RespConnectionError(err.code ?? "ERROR", err.message));
    });
    socket.on("close", () => this.fail(new RespConnectionError("CLOSED", "connection closed by the server")));
  }

  /** Connects, failing with `CONNECT_TIMEOUT` after `connectTimeoutMs`. */
  static connect(host: string, port: number, connectTimeoutMs = 5000): Promise<RespConnection> {
    return new Promise((resolve, reject) => {
      const socket = createConnection({ host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new RespConnectionError("CONNECT_TIMEOUT", `connect to ${host}:${port}: no answer in ${connectTimeoutMs} ms`));
      }, connectTimeoutMs);
      const onError = (err: NodeJS.ErrnoException): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(new RespConnectionError(err.code ?? "ERROR", `connect to ${host}:${port}: ${err.message}`));
      };
      socket.once("error", onError);
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.off("error", onError);
        resolve(new RespConnection(socket));
      });
    });
  }

  get closed(): boolean {
    return this.failure !== null;
  }

  /** Sends one command; rejects with `RespConnectionError` (the connection is then closed). */
  async command(args: readonly (string | number)[], timeoutMs = 30_000): Promise<RespValue> {
    const [reply] = await this.pipeline([args], timeoutMs);
    return reply!;
  }

  /**
   * Sends several commands at once and awaits all replies, in order. The
   * timeout covers the whole batch; on timeout the connection is closed
   * (later replies could no longer be matched to their commands).
   */
  pipeline(commands: readonly (readonly (string | number)[])[], timeoutMs = 30_000): Promise<RespValue[]> {
    if (this.failure) return Promise.reject(this.failure);
    const replies = commands.map(
      () =>
        new Promise<RespValue>((resolve, reject) => {
          this.pending.push({ resolve, reject });
        }),
    );
    // Every reply promise is observed by Promise.all below; avoid unhandled
    // rejections for the ones after the first failure.
    for (const r of replies) r.catch(() => {});
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const err = new RespConnectionError("TIMEOUT", `no reply in ${timeoutMs} ms`);
        this.fail(err);
        reject(err);
      }, timeoutMs);
    });
    this.socket.write(Buffer.concat(commands.map((c) => encodeCommand(c))));
    return Promise.race([Promise.all(replies), timeout]).finally(() => clearTimeout(timer));
  }

  close(): void {
    this.fail(new RespConnectionError("CLOSED", "connection closed by the client"));
  }

  private onData(chunk: Buffer): void {
    let values: RespValue[];
    try {
      values = this.parser.feed(chunk);
    } catch (err) {
      this.fail(new RespConnectionError("PROTOCOL", (err as Error).message));
      return;
    }
    for (const value of values) {
      const p = this.pending.shift();
      if (!p) {
        this.fail(new RespConnectionError("PROTOCOL", "reply without a command"));
        return;
      }
      p.resolve(value);
    }
  }

  /** First failure wins: every outstanding command gets it, the socket is destroyed. */
  private fail(err: RespConnectionError): void {
    if (this.failure) return;
    this.failure = err;
    for (const p of this.pending.splice(0)) p.reject(err);
    this.socket.destroy();
  }
}
