/**
 * An NBD server on a unix socket serving one BlockBackend, so that QEMU's NBD
 * client (the guest's virtio-blk disk) reads and writes through our code: a
 * write is acknowledged only once backend.write() has returned, FLUSH and FUA
 * call backend.flush() first (nbd-transmission.ts has each command's
 * meaning, nbd-session.ts one connection, nbd-protocol.ts the wire format).
 *
 * One export per server. Its name is checked: a client may ask for the
 * export's name or for the empty name (the protocol's "default export");
 * NBD_OPT_INFO/GO for any other name gets NBD_REP_ERR_UNKNOWN, and
 * NBD_OPT_EXPORT_NAME for it (which cannot fail softly) drops the client.
 *
 * Several clients may connect at once (e.g. QEMU and a `qemu-img` check);
 * their requests are served in the order they arrive, each reply after its
 * backend call. NBD_FLAG_CAN_MULTI_CONN is not offered.
 */
import { chmodSync, lstatSync, unlinkSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import type { BlockBackend } from "../engine.js";
import { NbdError } from "./nbd-error.js";
import * as P from "./nbd-protocol.js";
import { NbdSession, type NbdLog } from "./nbd-session.js";
import { newCounters, type NbdCounters, type NbdExport } from "./nbd-transmission.js";

export type { NbdLog } from "./nbd-session.js";
export type { NbdCounters } from "./nbd-transmission.js";
export { NbdError, type NbdErrorCode } from "./nbd-error.js";

export interface NbdServerOptions {
  /** Where to listen. A stale socket there (nobody answers) is replaced; anything else is an error. */
  socketPath: string;
  backend: BlockBackend;
  /** The export's name (default "disk"); the empty name reaches it too. */
  exportName?: string;
  /** Advertise NBD_FLAG_READ_ONLY and refuse WRITE, WRITE_ZEROES, TRIM with NBD_EPERM. */
  readOnly?: boolean;
  /** Minimum block size (default 512, the guest's sector; 1 allows byte-granular requests). */
  minBlockSize?: number;
  /** Preferred block size (default 4096). */
  preferredBlockSize?: number;
  /** Maximum READ/WRITE payload (default 32 MiB, at most 256 MiB): the most one request makes us buffer. */
  maxPayload?: number;
  /** Connections, disconnects and every error, as structured logs. */
  log?: NbdLog;
}

/** The largest maximum payload we accept as an option: what one request may make us allocate. */
export const NBD_MAX_PAYLOAD_LIMIT = 256 * 1024 * 1024;

export class NbdServer {
  readonly socketPath: string;
  readonly exportName: string;
  private readonly counters: NbdCounters = newCounters();
  private readonly sessions = new Set<NbdSession>();
  private nextId = 1;
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly server: Server,
    socketPath: string,
    private readonly exp: NbdExport,
    private readonly where: string,
    private readonly log: NbdLog | undefined,
  ) {
    this.socketPath = socketPath;
    this.exportName = exp.name;
    server.on("connection", (socket: Socket) => this.accept(socket));
  }

  /** Validates the options, binds the socket (mode 0600) and serves. */
  static async listen(opts: NbdServerOptions): Promise<NbdServer> {
    const exp = makeExport(opts);
    const where = `nbd ${opts.socketPath} export "${exp.name}"`;
    await removeStaleSocket(opts.socketPath, where);
    const server = createServer({ allowHalfOpen: true });
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        reject(new NbdError("LISTEN", `${where}: cannot listen: ${err.code ?? err.message}`));
      };
      server.once("error", onError);
      server.listen(opts.socketPath, () => {
        server.off("error", onError);
        resolve();
      });
    });
    try {
      chmodSync(opts.socketPath, 0o600);
    } catch (err) {
      server.close();
      throw new NbdError("LISTEN", `${where}: cannot restrict the socket's mode: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    server.on("error", (err: NodeJS.ErrnoException) => opts.log?.warn({}, `${where}: server error: ${err.code ?? err.message}`));
    opts.log?.info({ socket: opts.socketPath, size: exp.byteLength, readOnly: exp.readOnly }, `${where}: listening`);
    return new NbdServer(server, opts.socketPath, exp, where, opts.log);
  }

  /** A snapshot of the counters. */
  get stats(): NbdCounters {
    return { ...this.counters };
  }

  /** QEMU's URI for this export (`qemu-io -f raw URI`, `-drive file=URI`). */
  get uri(): string {
    return `nbd+unix:///${encodeURIComponent(this.exportName)}?socket=${encodeURIComponent(this.socketPath)}`;
  }

  /** QEMU's blockdev options for this export (`-blockdev`, QMP `blockdev-add`), without node-name. */
  get blockdevOptions(): { driver: "nbd"; server: { type: "unix"; path: string }; export: string } {
    return { driver: "nbd", server: { type: "unix", path: this.socketPath }, export: this.exportName };
  }

  /** Stops listening, drops every client (hard disconnect), removes the socket file; idempotent. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const s of this.sessions) s.destroy();
      this.sessions.clear();
      try {
        unlinkSync(this.socketPath);
      } catch {
        // already gone
      }
      this.log?.info({}, `${this.where}: closed`);
    });
    return this.closing;
  }

  private accept(socket: Socket): void {
    const id = this.nextId++;
    this.counters.connections++;
    this.counters.activeConnections++;
    const session = new NbdSession(socket, this.exp, {
      where: this.where,
      id,
      counters: this.counters,
      log: this.log,
      onDrop: (err) => {
        this.counters.droppedConnections++;
        this.counters.lastError = err.message;
      },
    });
    this.sessions.add(session);
    socket.on("close", () => {
      this.counters.activeConnections--;
      this.sessions.delete(session);
    });
    this.log?.info({ client: id }, `${this.where}: client ${id} connected`);
  }
}

function isPowerOf2(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && (n & (n - 1)) === 0;
}

/** The export a server serves, from its options; NbdError BAD_OPTIONS if they cannot be served. */
function makeExport(opts: NbdServerOptions): NbdExport {
  const name = opts.exportName ?? "disk";
  const where = `nbd ${opts.socketPath} export "${name}"`;
  const bad = (why: string): NbdError => new NbdError("BAD_OPTIONS", `${where}: ${why}`);
  const byteLength = opts.backend.byteLength;
  const min = opts.minBlockSize ?? 512;
  const preferred = opts.preferredBlockSize ?? 4096;
  const maxPayload = opts.maxPayload ?? P.NBD_DEFAULT_MAX_PAYLOAD;
  if (Buffer.byteLength(name, "utf8") > P.NBD_MAX_STRING) throw bad(`export name longer than ${P.NBD_MAX_STRING} bytes`);
  // Limits from doc/proto.md "Size constraints".
  if (!isPowerOf2(min) || min > P.NBD_MAX_MIN_BLOCK) throw bad(`minimum block size ${min}: not a power of 2 up to ${P.NBD_MAX_MIN_BLOCK}`);
  if (!isPowerOf2(preferred) || preferred < Math.max(min, 512)) throw bad(`preferred block size ${preferred}: not a power of 2 >= max(minimum, 512)`);
  if (!Number.isInteger(maxPayload) || maxPayload < preferred || maxPayload > NBD_MAX_PAYLOAD_LIMIT) {
    throw bad(`maximum payload ${maxPayload}: not an integer in [preferred block size, ${NBD_MAX_PAYLOAD_LIMIT}]`);
  }
  if (!Number.isSafeInteger(byteLength) || byteLength < 0 || byteLength % min !== 0) {
    throw bad(`backend size ${byteLength}: not a multiple of the minimum block size ${min}`);
  }
  const readOnly = opts.readOnly ?? false;
  const transmissionFlags =
    P.NBD_FLAG_HAS_FLAGS |
    P.NBD_FLAG_SEND_FLUSH |
    P.NBD_FLAG_SEND_FUA |
    P.NBD_FLAG_SEND_TRIM |
    P.NBD_FLAG_SEND_WRITE_ZEROES |
    (readOnly ? P.NBD_FLAG_READ_ONLY : 0);
  return { name, backend: opts.backend, byteLength, readOnly, minBlockSize: min, preferredBlockSize: preferred, maxPayload, transmissionFlags };
}

/** A socket file nobody answers on is removed (a daemon that died); a live one, or a non-socket, is an error. */
async function removeStaleSocket(path: string, where: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return; // nothing there
  }
  if (!isSocket) throw new NbdError("LISTEN", `${where}: ${path} exists and is not a socket`);
  const alive = await new Promise<boolean>((resolve) => {
    const probe = connect(path);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
  if (alive) throw new NbdError("IN_USE", `${where}: another server answers on ${path}`);
  unlinkSync(path);
}
