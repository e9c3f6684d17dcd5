import { connect, type Socket } from "node:net";
import { parseResponse, type ControlRequest } from "./protocol.js";

export class ControlError extends Error {
  constructor(
    readonly socketPath: string,
    message: string,
    readonly code: "UNREACHABLE" | "PROTOCOL" | "REFUSED" | "TIMEOUT",
  ) {
    super(message);
    this.name = "ControlError";
  }
}

function open(path: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new ControlError(path, `no answer from ${path} within ${timeoutMs} ms`, "TIMEOUT"));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new ControlError(path, `cannot reach the VM daemon at ${path}: ${err.code ?? err.message}`, "UNREACHABLE"));
    });
  });
}

/** Reads the first line; the rest of the stream stays in the socket for the caller. */
function readLine(socket: Socket, path: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    const timer = setTimeout(() => finish(new ControlError(path, `no answer from ${path} within ${timeoutMs} ms`, "TIMEOUT")), timeoutMs);
    const finish = (err: Error | undefined, line?: string, rest?: Buffer) => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.off("error", onError);
      if (err) reject(err);
      else {
        // Keep what followed the line for the caller: paused, so nothing is
        // emitted before the caller's listener is attached (it calls resume()).
        socket.pause();
        if (rest && rest.length > 0) socket.unshift(rest);
        resolve(line ?? "");
      }
    };
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const nl = buffered.indexOf(0x0a);
      if (nl >= 0) finish(undefined, buffered.subarray(0, nl).toString("utf8"), buffered.subarray(nl + 1));
    };
    const onEnd = () => finish(new ControlError(path, `the VM daemon at ${path} closed the connection without answering`, "PROTOCOL"));
    const onError = (err: Error) => finish(new ControlError(path, `control socket ${path}: ${err.message}`, "UNREACHABLE"));
    socket.on("data", onData);
    socket.once("end", onEnd);
    socket.once("error", onError);
    socket.resume();
  });
}

/**
 * Sends one request and returns the daemon's result; throws ControlError on
 * refusal. Event lines (progress of long requests) go to `onEvent`; the
 * timeout applies to the wait for each line, so a long migration that keeps
 * reporting progress never times out.
 */
export async function request(path: string, req: ControlRequest, timeoutMs = 30_000, onEvent?: (event: unknown) => void): Promise<unknown> {
  const socket = await open(path, timeoutMs);
  try {
    socket.write(JSON.stringify(req) + "\n");
    for (;;) {
      const line = await readLine(socket, path, timeoutMs);
      let response;
      try {
        response = parseResponse(line);
      } catch (err) {
        throw new ControlError(path, `bad answer from ${path}: ${(err as Error).message}`, "PROTOCOL");
      }
      if ("event" in response) {
        onEvent?.(response.event);
        continue;
      }
      if (!response.ok) throw new ControlError(path, response.error, "REFUSED");
      return response.result;
    }
  } finally {
    socket.destroy();
  }
}

/**
 * Opens a raw console stream; the caller owns the returned socket, which is
 * paused: attach a "data" listener, then call resume().
 */
export async function openConsole(path: string, replay = true, timeoutMs = 10_000): Promise<Socket> {
  const socket = await open(path, timeoutMs);
  socket.write(JSON.stringify({ op: "console", replay }) + "\n");
  const line = await readLine(socket, path, timeoutMs);
  const response = parseResponse(line);
  if ("event" in response || !response.ok) {
    socket.destroy();
    throw new ControlError(path, "event" in response ? "unexpected event line" : response.error, "REFUSED");
  }
  return socket;
}
