/**
 * The transmission phase's commands against a BlockBackend (nbd-protocol.ts
 * has the wire format and its source, doc/proto.md "Request types"): one
 * request in, one simple reply out, synchronously. A request that is
 * well-framed but wrong (out of bounds, unaligned, too long, a flag or command
 * we did not offer, a write to a read-only export) gets an error reply and
 * changes nothing; a backend that throws gets NBD_EIO.
 *
 * What each command means here:
 * - READ: backend.read(); the data follows the reply header. The bytes go to
 *   the socket as they are and may be sent later: a backend must return bytes
 *   it will not change afterwards (every backend in the project returns a
 *   fresh buffer).
 * - WRITE: backend.write(), then, with NBD_CMD_FLAG_FUA, backend.flush(),
 *   both before the reply ("MUST NOT send its reply ... until ... persisted").
 * - FLUSH: backend.flush() before the reply. Every write replied to earlier has
 *   already returned from backend.write(), so a flush covers them all.
 *   A backend without flush() has nothing further to make durable (its
 *   write() returning is as durable as it gets): the reply is a success.
 * - WRITE_ZEROES: zeros written through backend.write() (so disk replication
 *   sees them) in pieces of at most 1 MiB, never a hole (NBD_CMD_FLAG_NO_HOLE
 *   is what we do anyway); FUA as for WRITE. Longer than the maximum payload:
 *   NBD_EOVERFLOW (allowed for commands without payload, "Size constraints").
 *   NBD_FLAG_SEND_FAST_ZERO is not offered, so FAST_ZERO is an unknown flag.
 * - TRIM: checked, then nothing: "A server MAY discard ... but is not required to".
 * Errors follow "Error values": past the end NBD_ENOSPC for writes and
 * NBD_EINVAL otherwise, NBD_EPERM for a write to a read-only export,
 * NBD_EINVAL for unknown commands and flags.
 */
import type { BlockBackend } from "../engine.js";
import * as P from "./nbd-protocol.js";

/** What a session serves: one export over one backend. */
export interface NbdExport {
  /** The export's name (the empty name, the default export, reaches it too). */
  readonly name: string;
  readonly backend: BlockBackend;
  /** backend.byteLength, read once: an export does not change size. */
  readonly byteLength: number;
  readonly readOnly: boolean;
  /** Offsets and lengths must be multiples of this (1 or a power of 2 up to 64 KiB). */
  readonly minBlockSize: number;
  readonly preferredBlockSize: number;
  /** Longest READ or WRITE payload, and longest WRITE_ZEROES. */
  readonly maxPayload: number;
  readonly transmissionFlags: number;
}

/** Counters of one server, over all its connections (status, metrics). */
export interface NbdCounters {
  /** Connections accepted since the server started. */
  connections: number;
  activeConnections: number;
  /** Connections dropped for a protocol violation or a socket error. */
  droppedConnections: number;
  reads: number;
  bytesRead: number;
  writes: number;
  bytesWritten: number;
  /** WRITE_ZEROES commands and the bytes they zeroed (not in writes/bytesWritten). */
  zeroWrites: number;
  bytesZeroed: number;
  trims: number;
  /** NBD_CMD_FLUSH commands served. */
  flushes: number;
  /** Writes (WRITE, WRITE_ZEROES) that carried NBD_CMD_FLAG_FUA. */
  fuaWrites: number;
  /** Calls of backend.flush() (FLUSH and FUA). */
  backendFlushes: number;
  /** Error replies sent (bad requests and backend failures). */
  errors: number;
  /** The last error reply's or dropped connection's message. */
  lastError: string | undefined;
}

export function newCounters(): NbdCounters {
  return {
    connections: 0, activeConnections: 0, droppedConnections: 0,
    reads: 0, bytesRead: 0, writes: 0, bytesWritten: 0, zeroWrites: 0, bytesZeroed: 0,
    trims: 0, flushes: 0, fuaWrites: 0, backendFlushes: 0, errors: 0, lastError: undefined,
  };
}

/** One simple reply: the error (0 = success) and, for a successful READ, the data. */
export interface Reply {
  cookie: bigint;
  error: number;
  data?: Uint8Array;
}

/** Command flags each command accepts. FUA is "valid for all commands" once offered, even where it means nothing. */
const ALLOWED_FLAGS = new Map<number, number>([
  [P.NBD_CMD_READ, P.NBD_CMD_FLAG_FUA],
  [P.NBD_CMD_WRITE, P.NBD_CMD_FLAG_FUA],
  [P.NBD_CMD_FLUSH, P.NBD_CMD_FLAG_FUA],
  [P.NBD_CMD_TRIM, P.NBD_CMD_FLAG_FUA],
  [P.NBD_CMD_WRITE_ZEROES, P.NBD_CMD_FLAG_FUA | P.NBD_CMD_FLAG_NO_HOLE],
]);

/** WRITE_ZEROES writes from one shared zero buffer, this long. Nothing ever writes into it. */
const ZERO_CHUNK = 1024 * 1024;
let zeros: Buffer | undefined;
function zeroChunk(): Buffer {
  zeros ??= Buffer.alloc(ZERO_CHUNK);
  return zeros;
}

export class TransmissionHandler {
  constructor(
    private readonly exp: NbdExport,
    private readonly counters: NbdCounters,
    private readonly warn: (fields: Record<string, unknown>, message: string) => void,
  ) {}

  /** Runs one request (not DISC); `payload` is a WRITE's data (length checked by the caller). */
  handle(h: P.RequestHeader, payload: Buffer | undefined): Reply {
    const what = `${P.commandName(h.type)} [${h.offset}, +${h.length}) cookie ${h.cookie}`;
    const fail = (error: number, why: string): Reply => {
      const message = `${what}: error ${error}: ${why}`;
      this.counters.errors++;
      this.counters.lastError = message;
      this.warn({ command: h.type, error }, message);
      return { cookie: h.cookie, error };
    };
    const allowed = ALLOWED_FLAGS.get(h.type);
    if (allowed === undefined) return fail(P.NBD_EINVAL, "command not supported by this server");
    if ((h.flags & ~allowed) !== 0) return fail(P.NBD_EINVAL, `command flags 0x${h.flags.toString(16)} not valid for it`);
    const writes = h.type === P.NBD_CMD_WRITE || h.type === P.NBD_CMD_WRITE_ZEROES || h.type === P.NBD_CMD_TRIM;
    if (writes && this.exp.readOnly) return fail(P.NBD_EPERM, "the export is read-only");
    if (h.type === P.NBD_CMD_FLUSH) {
      this.counters.flushes++;
      const err = this.flush();
      return err === undefined ? { cookie: h.cookie, error: 0 } : fail(P.NBD_EIO, `backend flush failed: ${err}`);
    }

    if (h.offset + BigInt(h.length) > BigInt(this.exp.byteLength)) {
      const error = h.type === P.NBD_CMD_WRITE || h.type === P.NBD_CMD_WRITE_ZEROES ? P.NBD_ENOSPC : P.NBD_EINVAL;
      return fail(error, `beyond the end of the ${this.exp.byteLength}-byte export`);
    }
    const offset = Number(h.offset);
    const min = this.exp.minBlockSize;
    if (offset % min !== 0 || h.length % min !== 0) return fail(P.NBD_EINVAL, `not aligned to the minimum block size ${min}`);
    const fua = (h.flags & P.NBD_CMD_FLAG_FUA) !== 0;

    switch (h.type) {
      case P.NBD_CMD_READ: {
        if (h.length > this.exp.maxPayload) return fail(P.NBD_EINVAL, `longer than the maximum payload ${this.exp.maxPayload}`);
        let data: Uint8Array;
        try {
          data = h.length === 0 ? new Uint8Array(0) : this.exp.backend.read(offset, h.length);
        } catch (err) {
          return fail(P.NBD_EIO, `backend read failed: ${message(err)}`);
        }
        if (data.length !== h.length) return fail(P.NBD_EIO, `backend read returned ${data.length} bytes`);
        this.counters.reads++;
        this.counters.bytesRead += h.length;
        return { cookie: h.cookie, error: 0, data };
      }
      case P.NBD_CMD_WRITE: {
        const data = payload ?? Buffer.alloc(0);
        try {
          if (data.length > 0) this.exp.backend.write(offset, data);
        } catch (err) {
          return fail(P.NBD_EIO, `backend write failed: ${message(err)}`);
        }
        this.counters.writes++;
        this.counters.bytesWritten += data.length;
        return this.afterWrite(h, fua, fail);
      }
      case P.NBD_CMD_WRITE_ZEROES: {
        if (h.length > this.exp.maxPayload) return fail(P.NBD_EOVERFLOW, `longer than the maximum payload ${this.exp.maxPayload}`);
        const zero = zeroChunk();
        try {
          for (let done = 0; done < h.length; done += ZERO_CHUNK) {
            this.exp.backend.write(offset + done, zero.subarray(0, Math.min(ZERO_CHUNK, h.length - done)));
          }
        } catch (err) {
          return fail(P.NBD_EIO, `backend write (zeroes) failed: ${message(err)}`);
        }
        this.counters.zeroWrites++;
        this.counters.bytesZeroed += h.length;
        return this.afterWrite(h, fua, fail);
      }
      case P.NBD_CMD_TRIM:
        this.counters.trims++;
        return { cookie: h.cookie, error: 0 };
      default:
        return fail(P.NBD_EINVAL, "command not supported by this server");
    }
  }

  /** FUA: the written data is flushed before the reply. */
  private afterWrite(h: P.RequestHeader, fua: boolean, fail: (error: number, why: string) => Reply): Reply {
    if (!fua) return { cookie: h.cookie, error: 0 };
    this.counters.fuaWrites++;
    const err = this.flush();
    return err === undefined ? { cookie: h.cookie, error: 0 } : fail(P.NBD_EIO, `backend flush (FUA) failed: ${err}`);
  }

  /** Calls backend.flush() if it has one; the failure's message, or undefined. */
  private flush(): string | undefined {
    const backend = this.exp.backend;
    if (backend.flush === undefined) return undefined;
    try {
      backend.flush();
      this.counters.backendFlushes++;
      return undefined;
    } catch (err) {
      return message(err);
    }
  }
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
