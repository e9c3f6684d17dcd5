/**
 * A QMP connection over a unix socket: greeting, capabilities negotiation,
 * commands matched to their replies by `id`, a timeout on every call,
 * asynchronous events dispatched by name, and one "closed" notification.
 * The typed commands are in qmp-commands.ts; the line format in qmp-wire.ts.
 */
import { connect as netConnect, type Socket } from "node:net";
import { QmpError } from "./qmp-error.js";
import {
  QmpLineSplitter,
  parseQmpLine,
  quoteLine,
  type JsonValue,
  type QmpEvent,
  type QmpGreeting,
  type QmpMessage,
} from "./qmp-wire.js";

export interface QmpConnectOptions {
  /** Named in every message ("QMP connection to <vm> closed"). */
  vm: string;
  /** The unix socket QEMU listens on. */
  path: string;
  /** Bound on connect + greeting + `qmp_capabilities` (default 5000 ms). */
  timeoutMs?: number;
  /** Timeout of a command when its call gives none (default 10000 ms). */
  commandTimeoutMs?: number;
}

export interface QmpCallOptions {
  timeoutMs?: number;
}

/** Why the connection closed; given once, to every close handler. */
export interface QmpCloseInfo {
  /** True when close() was called here; false for EOF, a socket error or a protocol violation. */
  local: boolean;
  /** code CLOSED (EOF, socket error, local close) or PROTOCOL (a line we could not parse). */
  error: QmpError;
}

export type QmpEventHandler = (event: QmpEvent) => void;

const DEFAULT_CONNECT_TIMEOUT_MS = 5000;
const DEFAULT_COMMAND_TIMEOUT_MS = 10_000;

interface PendingCall {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: QmpError) => void;
  timer: NodeJS.Timeout;
}

type Phase = "greeting" | "ready" | "closed";

export class QmpClient {
  private phase: Phase = "greeting";
  private readonly splitter = new QmpLineSplitter();
  private readonly pending = new Map<number, PendingCall>();
  private readonly handlers = new Map<string, Set<QmpEventHandler>>();
  private readonly closeHandlers = new Set<(info: QmpCloseInfo) => void>();
  private nextId = 1;
  private socketError: Error | undefined;
  private greetingWaiter: { resolve: (g: QmpGreeting) => void; reject: (e: QmpError) => void } | undefined;
  private greetingValue: QmpGreeting | undefined;
  private closeInfo: QmpCloseInfo | undefined;
  private resolveClosed: (info: QmpCloseInfo) => void = () => undefined;

  /** Resolves once, when the connection is closed for whatever reason. */
  readonly closed: Promise<QmpCloseInfo>;

  private constructor(
    readonly vm: string,
    private readonly socket: Socket,
    private readonly commandTimeoutMs: number,
  ) {
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err) => (this.socketError = err));
    socket.on("close", () => this.onSocketClose());
  }

  /**
   * Connects (one attempt: a missing socket or a refused connection is a
   * CONNECT_FAILED with `errno`), reads the greeting and negotiates
   * capabilities. On any failure the socket is closed before rejecting.
   */
  static async connect(opts: QmpConnectOptions): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const socket = await openSocket(opts.vm, opts.path, timeoutMs);
    const client = new QmpClient(opts.vm, socket, opts.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS);
    const timer = setTimeout(() => {
      client.fail(new QmpError(opts.vm, "GREETING", `QMP connection to ${opts.vm} (${opts.path}): no greeting and capabilities within ${timeoutMs} ms`));
    }, timeoutMs);
    try {
      client.greetingValue = await client.waitForGreeting();
      await client.send("qmp_capabilities", undefined, timeoutMs);
      client.phase = "ready";
      return client;
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      client.close();
      throw err instanceof QmpError && err.code === "GREETING"
        ? err
        : new QmpError(opts.vm, "GREETING", `QMP connection to ${opts.vm} (${opts.path}): negotiation failed: ${why}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
  }

  /** The greeting QEMU sent (its version and offered capabilities). */
  get greeting(): QmpGreeting {
    if (this.greetingValue === undefined) throw new QmpError(this.vm, "GREETING", `QMP connection to ${this.vm}: no greeting yet`);
    return this.greetingValue;
  }

  get isClosed(): boolean {
    return this.phase === "closed";
  }

  /**
   * Runs `command` and resolves with its `return` value. Rejects with a
   * QmpError: COMMAND_FAILED (QEMU's `class` and `desc`), TIMEOUT (a reply
   * that comes later is dropped), or CLOSED.
   */
  execute(command: string, args?: Readonly<Record<string, JsonValue>>, opts: QmpCallOptions = {}): Promise<unknown> {
    if (this.phase === "greeting") {
      return Promise.reject(new QmpError(this.vm, "PROTOCOL", `QMP command ${command} to ${this.vm}: capabilities not negotiated yet`, { command }));
    }
    return this.send(command, args, opts.timeoutMs ?? this.commandTimeoutMs);
  }

  /** Calls `handler` for every event named `event` until the returned function is called. */
  on(event: string, handler: QmpEventHandler): () => void {
    let set = this.handlers.get(event);
    if (set === undefined) {
      set = new Set();
      this.handlers.set(event, set);
    }
    const entry: QmpEventHandler = (e) => handler(e); // distinct per subscription
    set.add(entry);
    return () => {
      set?.delete(entry);
    };
  }

  /** Calls `handler` once when the connection closes (at once if it already has). */
  onClose(handler: (info: QmpCloseInfo) => void): () => void {
    if (this.closeInfo !== undefined) {
      const info = this.closeInfo;
      queueMicrotask(() => handler(info));
      return () => undefined;
    }
    this.closeHandlers.add(handler);
    return () => {
      this.closeHandlers.delete(handler);
    };
  }

  /** Closes the connection; pending calls reject with CLOSED. Idempotent. */
  close(): void {
    this.finish({ local: true, error: new QmpError(this.vm, "CLOSED", `QMP connection to ${this.vm} closed by the toolstack`) });
  }

  /**
   * Closes the connection because of what was received (a bad reply or
   * event a caller could not parse): the monitor is no longer trusted.
   */
  fail(error: QmpError): void {
    this.finish({ local: false, error });
  }

  private send(command: string, args: Readonly<Record<string, JsonValue>> | undefined, timeoutMs: number): Promise<unknown> {
    if (this.phase === "closed") {
      const why = this.closeInfo?.error.message ?? "closed";
      return Promise.reject(new QmpError(this.vm, "CLOSED", `QMP connection to ${this.vm} closed before ${command} (${why})`, { command }));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QmpError(this.vm, "TIMEOUT", `QMP command ${command} to ${this.vm} got no reply within ${timeoutMs} ms`, { command }));
      }, timeoutMs);
      this.pending.set(id, { command, resolve, reject, timer });
      const request = args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
      this.socket.write(`${JSON.stringify(request)}\n`);
    });
  }

  private waitForGreeting(): Promise<QmpGreeting> {
    return new Promise((resolve, reject) => {
      if (this.closeInfo !== undefined) reject(this.closeInfo.error);
      else this.greetingWaiter = { resolve, reject };
    });
  }

  private onData(chunk: Buffer): void {
    if (this.phase === "closed") return;
    const lines = this.splitter.push(chunk);
    if (!Array.isArray(lines)) {
      this.protocolError(`QMP connection to ${this.vm}: ${lines.tooLong}`);
      return;
    }
    for (const line of lines) {
      const msg = parseQmpLine(line);
      if (msg.kind === "malformed") {
        this.protocolError(`QMP connection to ${this.vm}: malformed line from QEMU: ${msg.why}: ${quoteLine(line)}`);
        return;
      }
      this.dispatch(msg, line);
      if (this.isClosed) return; // dispatch may have closed it
    }
  }

  private dispatch(msg: Exclude<QmpMessage, { kind: "malformed" }>, line: string): void {
    if (msg.kind === "greeting") {
      const waiter = this.greetingWaiter;
      if (waiter === undefined) {
        this.protocolError(`QMP connection to ${this.vm}: a second greeting: ${quoteLine(line)}`);
        return;
      }
      this.greetingWaiter = undefined;
      waiter.resolve(msg.greeting);
      return;
    }
    if (this.greetingWaiter !== undefined) {
      const error = new QmpError(this.vm, "GREETING", `QMP connection to ${this.vm}: the first line is not a QMP greeting: ${quoteLine(line)}`);
      this.finish({ local: false, error });
      return;
    }
    if (msg.kind === "event") {
      this.emitEvent(msg.event);
      return;
    }
    if (msg.id === undefined || typeof msg.id === "string") {
      // We only send numeric ids: a reply without one means QEMU could not read a command of ours.
      this.protocolError(`QMP connection to ${this.vm}: a reply to no command of ours: ${quoteLine(line)}`);
      return;
    }
    const call = this.pending.get(msg.id);
    if (call === undefined) return; // the reply to a call that timed out
    this.pending.delete(msg.id);
    clearTimeout(call.timer);
    if (msg.kind === "return") call.resolve(msg.value);
    else {
      call.reject(
        new QmpError(this.vm, "COMMAND_FAILED", `QMP command ${call.command} on ${this.vm} failed: ${msg.class}: ${msg.desc}`, {
          command: call.command,
          class: msg.class,
          desc: msg.desc,
        }),
      );
    }
  }

  private emitEvent(event: QmpEvent): void {
    const set = this.handlers.get(event.event);
    if (set === undefined) return;
    for (const handler of [...set]) {
      try {
        handler(event);
      } catch (err) {
        // A subscriber's bug must not leave this connection half-dispatched; it still surfaces.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  private protocolError(message: string): void {
    this.finish({ local: false, error: new QmpError(this.vm, "PROTOCOL", message) });
  }

  private onSocketClose(): void {
    const rest = this.splitter.end();
    const why = this.socketError
      ? `: ${this.socketError.message}`
      : rest !== ""
        ? ` in the middle of a line (${quoteLine(rest)})`
        : " (EOF)";
    const error = new QmpError(this.vm, "CLOSED", `QMP connection to ${this.vm} closed${why}`, { cause: this.socketError });
    this.finish({ local: false, error });
  }

  private finish(info: QmpCloseInfo): void {
    if (this.closeInfo !== undefined) return;
    this.closeInfo = info;
    this.phase = "closed";
    this.socket.destroy();
    this.greetingWaiter?.reject(info.error);
    this.greetingWaiter = undefined;
    for (const [id, call] of this.pending) {
      this.pending.delete(id);
      clearTimeout(call.timer);
      const message = `QMP connection to ${this.vm} closed while ${call.command} was pending (${info.error.message})`;
      call.reject(new QmpError(this.vm, "CLOSED", message, { command: call.command, cause: info.error }));
    }
    const handlers = [...this.closeHandlers];
    this.closeHandlers.clear();
    this.resolveClosed(info);
    for (const handler of handlers) {
      try {
        handler(info);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}

/** One connection attempt; CONNECT_FAILED carries Node's errno code. */
function openSocket(vm: string, path: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ path });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new QmpError(vm, "CONNECT_FAILED", `QMP socket ${path} of ${vm} did not accept within ${timeoutMs} ms`, { errno: "ETIMEDOUT" }));
    }, timeoutMs);
    const onError = (err: NodeJS.ErrnoException): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(new QmpError(vm, "CONNECT_FAILED", `cannot connect to the QMP socket ${path} of ${vm}: ${err.message}`, { errno: err.code, cause: err }));
    };
    socket.once("error", onError);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.off("error", onError);
      resolve(socket);
    });
  });
}
