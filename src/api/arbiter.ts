/**
 * The arbiter (the split-brain rule of src/colo/lease.ts) on the network:
 * a small lease service both hosts reach by another path than the
 * replication link (in the lab: the LAN). Authenticated like every colo
 * channel (TLS-PSK, the shared key). One JSON object per line each way:
 *
 *   → {"id":1,"op":"acquire","vm":"web","holder":"primary@h1:4242","ttlMs":1000,"solo":false}
 *   ← {"id":1,"granted":true,"solo":false,"holder":"primary@h1:4242","remainingMs":1000}
 *   → {"id":2,"op":"release","vm":"web","holder":"primary@h1:4242"}
 *   ← {"id":2,"ok":true}
 *   → {"id":3,"op":"list"}
 *   ← {"id":3,"leases":[...]}
 *
 * A bad request gets {"id":..,"error":"..."} and the connection stays up.
 *
 * Times on the wire are durations (`ttlMs`, `remainingMs`), never instants:
 * the arbiter counts a lease from its receipt of the request on its own
 * monotonic clock, the holder from its sending on its own (src/colo/lease.ts).
 *
 * A peer that fails the handshake (another key, not TLS, silent), sends a
 * line over MAX_LINE, leaves a line unfinished (cut, or stalled past
 * PARTIAL_LINE_TIMEOUT_MS) or does not read its answers is dropped. Each is
 * logged; no lease changes but by a whole, valid request.
 */
import type { TLSSocket } from "node:tls";
import { createInterface } from "node:readline";
import { connectSecure, formatEndpoint, listenSecure, remotePeer, type Endpoint, type SecureListener } from "../channel/secure-channel.js";
import { LeaseTable, type Arbiter, type LeaseAnswer } from "../colo/lease.js";
import { monotonicMs, type Clock } from "../sys/clock.js";

/** The arbiter's default port (the migration port is 8002). */
export const DEFAULT_ARBITER_PORT = 8003;
/** A request the arbiter has not answered within this is a failure (the caller counts it as unreachable). */
const REQUEST_TIMEOUT_MS = 500;
const MAX_LINE = 4096;
/** A request line unfinished this long after its first byte: the peer is dropped (a cut request cannot hold a connection). */
const PARTIAL_LINE_TIMEOUT_MS = 5_000;
/** Answers a peer has left unread beyond this: it is dropped (requests sent without reading cannot grow the arbiter's memory). */
const MAX_UNREAD_ANSWERS = 1 << 20;
/** How long a dropped peer has to read why before its connection is cut. */
const DROP_LINGER_MS = 1_000;

type ArbiterRequest =
  | { id: number; op: "acquire"; vm: string; holder: string; ttlMs: number; solo: boolean }
  | { id: number; op: "release"; vm: string; holder: string }
  | { id: number; op: "list" };

function parseRequest(line: string): ArbiterRequest {
  if (line.length > MAX_LINE) throw new Error(`request longer than ${MAX_LINE} bytes`);
  const v = JSON.parse(line) as Record<string, unknown>;
  if (typeof v !== "object" || v === null) throw new Error("request must be a JSON object");
  const id = v.id;
  if (typeof id !== "number" || !Number.isInteger(id)) throw new Error('"id" must be an integer');
  const str = (k: string) => {
    const x = v[k];
    if (typeof x !== "string" || x.length === 0 || x.length > 256) throw new Error(`"${k}" must be a string of 1..256 characters`);
    return x;
  };
  switch (v.op) {
    case "acquire": {
      const ttl = v.ttlMs;
      if (typeof ttl !== "number" || !Number.isInteger(ttl) || ttl < 10 || ttl > 600_000) throw new Error('"ttlMs" must be an integer 10..600000');
      if (typeof v.solo !== "boolean") throw new Error('"solo" must be a boolean');
      return { id, op: "acquire", vm: str("vm"), holder: str("holder"), ttlMs: ttl, solo: v.solo };
    }
    case "release":
      return { id, op: "release", vm: str("vm"), holder: str("holder") };
    case "list":
      return { id, op: "list" };
    default:
      throw new Error(`unknown op ${JSON.stringify(v.op)}`);
  }
}

/**
 * Calls `onLine` with each request line of `socket` (readline would buffer a
 * line of any length). A line over MAX_LINE bytes, one cut by the end of the
 * connection or unfinished after `partialLineTimeoutMs` is not a request:
 * `onBad` says what was wrong, and no line is read after it.
 */
function requestLines(socket: TLSSocket, onLine: (line: string) => void, onBad: (what: string) => void, partialLineTimeoutMs: number): void {
  let partial: Buffer[] = [];
  let partialLength = 0;
  let stalled: NodeJS.Timeout | undefined;
  let done = false;
  const bad = (what: string) => {
    if (done) return;
    done = true;
    clearTimeout(stalled);
    onBad(what);
  };
  const tooLong = `a request line longer than ${MAX_LINE} bytes`;
  socket.on("data", (chunk: Buffer) => {
    let from = 0;
    for (let nl = chunk.indexOf(0x0a); nl >= 0 && !done && !socket.destroyed; nl = chunk.indexOf(0x0a, from)) {
      if (partialLength + nl - from > MAX_LINE) return bad(tooLong);
      const line = Buffer.concat([...partial, chunk.subarray(from, nl)]).toString("utf8");
      partial = [];
      partialLength = 0;
      from = nl + 1;
      onLine(line.endsWith("\r") ? line.slice(0, -1) : line);
    }
    if (done) return;
    if (partialLength + chunk.length - from > MAX_LINE) return bad(tooLong);
    if (from > 0 || partialLength === 0) {
      clearTimeout(stalled); // a line ended here: the next one's time starts now
      stalled = undefined;
    }
    if (from < chunk.length) {
      partial.push(chunk.subarray(from));
      partialLength += chunk.length - from;
      stalled ??= setTimeout(() => bad(`a request line unfinished after ${partialLineTimeoutMs} ms (${partialLength} bytes without a newline)`), partialLineTimeoutMs);
    }
  });
  socket.on("end", () => {
    if (partialLength > 0) bad(`the connection ended inside a request (${partialLength} bytes without a newline): not acted on`);
  });
  socket.on("close", () => clearTimeout(stalled));
}

/** Bounds on a connecting peer (tests shorten them). */
export interface ArbiterTiming {
  /** Default HANDSHAKE_TIMEOUT_MS (src/channel). */
  handshakeTimeoutMs?: number;
  /** Default PARTIAL_LINE_TIMEOUT_MS. */
  partialLineTimeoutMs?: number;
}

/** Serves leases until close(). */
export class ArbiterServer {
  readonly table = new LeaseTable();
  private readonly sockets = new Set<TLSSocket>();
  /**
   * Per VM: its holder and the connection the lease was last granted over
   * (LeaseTable.holderDisconnected when it closes), with that connection's
   * number: connections are numbered as they are accepted.
   */
  private readonly grantedVia = new Map<string, { holder: string; socket: TLSSocket; connection: number }>();
  private accepted = 0;

  private constructor(
    private listener: SecureListener | undefined,
    /** The arbiter's monotonic clock: leases expire on it, whatever the wall clock does. */
    private readonly now: Clock,
  ) {}

  static async listen(
    at: Endpoint,
    key: Buffer,
    log: (msg: string) => void = () => {},
    timing: ArbiterTiming = {},
    now: Clock = monotonicMs,
  ): Promise<ArbiterServer & { address: Endpoint }> {
    const server = new ArbiterServer(undefined, now);
    const listener = await listenSecure(
      at,
      key,
      (socket) => server.serve(socket, log, timing.partialLineTimeoutMs ?? PARTIAL_LINE_TIMEOUT_MS),
      (err) => log(err.message),
      timing.handshakeTimeoutMs === undefined ? {} : { handshakeTimeoutMs: timing.handshakeTimeoutMs },
    );
    server.listener = listener;
    return Object.assign(server, { address: listener.address });
  }

  private serve(socket: TLSSocket, log: (msg: string) => void, partialLineTimeoutMs: number): void {
    this.sockets.add(socket);
    const connection = ++this.accepted;
    const peer = remotePeer(socket);
    socket.on("close", () => {
      this.sockets.delete(socket);
      for (const [vm, via] of this.grantedVia) {
        if (via.socket !== socket) continue;
        this.grantedVia.delete(vm);
        if (this.table.holderDisconnected(vm, via.holder)) log(`lease of ${vm}: the connection of its holder ${via.holder} (${peer}) closed; another holder may take it at once`);
      }
    });
    socket.on("error", () => socket.destroy());
    const drop = (what: string) => {
      log(`connection from ${peer} dropped: ${what}`);
      if (socket.writable) socket.end(JSON.stringify({ id: null, error: what }) + "\n");
      setTimeout(() => socket.destroy(), DROP_LINGER_MS).unref();
    };
    requestLines(socket, (line) => {
      let id: unknown = null;
      try {
        id = (JSON.parse(line) as { id?: unknown }).id ?? null;
      } catch {
        // reported below
      }
      let answer: Record<string, unknown>;
      try {
        const r = parseRequest(line);
        const now = this.now();
        const via = r.op === "list" ? undefined : this.grantedVia.get(r.vm);
        if (via !== undefined && r.op !== "list" && via.holder === r.holder && connection < via.connection) {
          // A holder talks over its newest connection only (ArbiterClient): a request that comes late over an older
          // one (sent before a timeout made it reconnect) would undo what it asked since, e.g. clear its solo mark.
          throw new Error(`a ${r.op} of ${r.vm} over an older connection of ${r.holder} than the one its lease was last granted over: ignored`);
        }
        if (r.op === "acquire") {
          const wasSolo = this.table.isSolo(r.vm, r.holder);
          const a = this.table.acquire(r.vm, r.holder, r.ttlMs, now, r.solo);
          if (a.granted) this.grantedVia.set(r.vm, { holder: r.holder, socket, connection });
          answer = { id: r.id, ...a };
          if (a.granted && r.solo && !wasSolo) log(`lease of ${r.vm}: ${r.holder} runs alone (solo)`);
        } else if (r.op === "release") {
          this.table.release(r.vm, r.holder);
          if (this.grantedVia.get(r.vm)?.holder === r.holder) this.grantedVia.delete(r.vm);
          answer = { id: r.id, ok: true };
        } else {
          answer = { id: r.id, leases: this.table.snapshot(now) };
        }
      } catch (err) {
        answer = { id, error: (err as Error).message };
        log(`request from ${peer}: ${(err as Error).message}`);
      }
      socket.write(JSON.stringify(answer) + "\n");
      if (socket.writableLength > MAX_UNREAD_ANSWERS) {
        log(`connection from ${peer} dropped: it leaves its answers unread (${socket.writableLength} bytes)`);
        socket.destroy();
      }
    }, drop, partialLineTimeoutMs);
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await this.listener?.close();
  }
}

/** The daemons' side: one connection, re-opened when it breaks; each request bounded in time. */
export class ArbiterClient implements Arbiter {
  private socket: TLSSocket | undefined;
  private connecting: Promise<TLSSocket> | undefined;
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private closed = false;

  constructor(
    readonly at: Endpoint,
    private readonly key: Buffer,
  ) {}

  private connect(): Promise<TLSSocket> {
    if (this.socket && !this.socket.destroyed) return Promise.resolve(this.socket);
    this.connecting ??= connectSecure(this.at, this.key, REQUEST_TIMEOUT_MS)
      .then((socket) => {
        this.socket = socket;
        const lines = createInterface({ input: socket, crlfDelay: Infinity });
        lines.on("line", (line) => {
          let v: Record<string, unknown>;
          try {
            v = JSON.parse(line) as Record<string, unknown>;
          } catch {
            socket.destroy();
            return;
          }
          const w = typeof v.id === "number" ? this.waiting.get(v.id) : undefined;
          if (!w) return;
          this.waiting.delete(v.id as number);
          clearTimeout(w.timer);
          if (typeof v.error === "string") w.reject(new Error(`arbiter ${formatEndpoint(this.at)}: ${v.error}`));
          else w.resolve(v);
        });
        const drop = () => {
          if (this.socket === socket) this.socket = undefined;
          for (const [id, w] of this.waiting) {
            clearTimeout(w.timer);
            w.reject(new Error(`arbiter ${formatEndpoint(this.at)}: connection lost`));
            this.waiting.delete(id);
          }
        };
        socket.on("close", drop);
        socket.on("error", () => socket.destroy());
        return socket;
      })
      .finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  private async call(req: Record<string, unknown>): Promise<Record<string, unknown>> {
    if (this.closed) throw new Error("arbiter client closed");
    const socket = await this.connect();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`arbiter ${formatEndpoint(this.at)}: no answer within ${REQUEST_TIMEOUT_MS} ms`));
        socket.destroy();
      }, REQUEST_TIMEOUT_MS);
      this.waiting.set(id, { resolve, reject, timer });
      socket.write(JSON.stringify({ id, ...req }) + "\n");
    });
  }

  async acquire(vm: string, holder: string, ttlMs: number, solo: boolean): Promise<LeaseAnswer> {
    const v = await this.call({ op: "acquire", vm, holder, ttlMs, solo });
    if (typeof v.granted !== "boolean" || typeof v.solo !== "boolean" || typeof v.holder !== "string" || typeof v.remainingMs !== "number") {
      throw new Error(`arbiter ${formatEndpoint(this.at)}: malformed answer`);
    }
    return { granted: v.granted, solo: v.solo, holder: v.holder, remainingMs: v.remainingMs };
  }

  async release(vm: string, holder: string): Promise<void> {
    await this.call({ op: "release", vm, holder });
  }

  async list(): Promise<unknown> {
    return (await this.call({ op: "list" })).leases;
  }

  close(): void {
    this.closed = true;
    this.socket?.destroy();
  }
}
