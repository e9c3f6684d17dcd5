/**
 * Test helpers for the NBD server (not used by the product code): a raw NBD
 * client that speaks the wire format byte by byte, so tests can send what a
 * real client never would, and an in-memory BlockBackend that records calls.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BlockBackend } from "../engine.js";
import { ByteQueue } from "./byte-queue.js";
import * as P from "./nbd-protocol.js";
import { NbdServer, type NbdServerOptions } from "./nbd-server.js";

export interface TestServer {
  server: NbdServer;
  disk: RecordingDisk;
  /** Messages logged at warn / info. */
  warnings: string[];
  infos: string[];
  /** A connected raw client (handshake not done). */
  connect(): Promise<RawNbdClient>;
  /** A raw client in transmission (NBD_OPT_GO done). */
  open(): Promise<RawNbdClient>;
  close(): Promise<void>;
}

/** A server over a fresh RecordingDisk on a socket in a fresh temporary directory. */
export async function startTestServer(size = 1024 * 1024, opts: Partial<NbdServerOptions> = {}): Promise<TestServer> {
  const dir = mkdtempSync(join(tmpdir(), "colo-nbd-"));
  const disk = new RecordingDisk(size);
  const warnings: string[] = [];
  const infos: string[] = [];
  const server = await NbdServer.listen({
    socketPath: join(dir, "nbd.sock"),
    backend: disk,
    log: { info: (_f, m) => infos.push(m), warn: (_f, m) => warnings.push(m) },
    ...opts,
  });
  const clients: RawNbdClient[] = [];
  const connectClient = async (): Promise<RawNbdClient> => {
    const c = await RawNbdClient.connect(server.socketPath);
    clients.push(c);
    return c;
  };
  return {
    server,
    disk,
    warnings,
    infos,
    connect: connectClient,
    open: async () => {
      const c = await connectClient();
      await c.open();
      return c;
    },
    close: async () => {
      for (const c of clients) c.destroy();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** An in-memory disk that records every call, in order ("read", "write", "flush"). */
export class RecordingDisk implements BlockBackend {
  readonly byteLength: number;
  readonly bytes: Uint8Array;
  readonly calls: string[] = [];
  flushes = 0;
  /** Set to make the next write throw. */
  failNextWrite: Error | undefined;

  constructor(size: number) {
    this.byteLength = size;
    this.bytes = new Uint8Array(size);
  }

  read(offset: number, length: number): Uint8Array {
    this.check(offset, length);
    this.calls.push(`read ${offset} ${length}`);
    return this.bytes.slice(offset, offset + length);
  }

  write(offset: number, data: Uint8Array): void {
    this.check(offset, data.length);
    const fail = this.failNextWrite;
    this.failNextWrite = undefined;
    if (fail !== undefined) throw fail;
    this.calls.push(`write ${offset} ${data.length}`);
    this.bytes.set(data, offset);
  }

  flush(): void {
    this.flushes++;
    this.calls.push("flush");
  }

  private check(offset: number, length: number): void {
    if (offset < 0 || length < 0 || offset + length > this.byteLength) throw new RangeError(`recording disk: [${offset}, +${length}) out of range`);
  }
}

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export interface SimpleReply {
  error: number;
  cookie: bigint;
  data: Buffer;
}

export interface RequestFields {
  type: number;
  flags?: number;
  cookie?: bigint;
  offset?: bigint | number;
  length?: number;
  /** WRITE payload (length defaults to its length). */
  data?: Uint8Array;
  magic?: number;
}

export function encodeRequest(r: RequestFields): Buffer {
  const data = r.data ?? new Uint8Array(0);
  const b = Buffer.alloc(P.REQUEST_HEADER_SIZE + data.length);
  b.writeUInt32BE(r.magic ?? P.NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(r.flags ?? 0, 4);
  b.writeUInt16BE(r.type, 6);
  b.writeBigUInt64BE(r.cookie ?? 1n, 8);
  b.writeBigUInt64BE(BigInt(r.offset ?? 0), 16);
  b.writeUInt32BE(r.length ?? data.length, 24);
  b.set(data, P.REQUEST_HEADER_SIZE);
  return b;
}

export function encodeOption(option: number, data: Uint8Array = new Uint8Array(0)): Buffer {
  const b = Buffer.alloc(P.OPTION_HEADER_SIZE + data.length);
  b.writeBigUInt64BE(P.NBD_OPTS_MAGIC, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(data.length, 12);
  b.set(data, P.OPTION_HEADER_SIZE);
  return b;
}

/** NBD_OPT_INFO / NBD_OPT_GO data. */
export function encodeInfoRequest(name: string, requests: number[] = [P.NBD_INFO_BLOCK_SIZE]): Buffer {
  const n = Buffer.from(name, "utf8");
  const b = Buffer.alloc(4 + n.length + 2 + 2 * requests.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(requests.length, 4 + n.length);
  requests.forEach((r, i) => b.writeUInt16BE(r, 4 + n.length + 2 + 2 * i));
  return b;
}

export class RawNbdClient {
  private readonly queue = new ByteQueue();
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private ended = false;
  /** Resolves when the server has closed the connection (or it failed). */
  readonly closed: Promise<void>;

  private constructor(readonly socket: Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.queue.push(chunk);
      this.serve();
    });
    this.closed = new Promise((resolve) => {
      const done = (): void => {
        this.ended = true;
        this.serve();
        resolve();
      };
      socket.on("close", done);
      socket.on("error", () => undefined);
    });
  }

  static connect(path: string): Promise<RawNbdClient> {
    return new Promise((resolve, reject) => {
      const s = connect(path);
      s.once("error", reject);
      s.once("connect", () => {
        s.off("error", reject);
        resolve(new RawNbdClient(s));
      });
    });
  }

  /** The next `n` bytes from the server; rejects if it closes first. */
  read(n: number): Promise<Buffer> {
    if (this.waiter !== undefined) throw new Error("RawNbdClient: one read at a time");
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
      this.serve();
    });
  }

  write(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** Stop / start reading from the socket (the server's output then backs up). */
  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Reads the greeting and sends our flags; returns the server's handshake flags. */
  async handshake(clientFlags = P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES): Promise<number> {
    const g = await this.read(P.GREETING_SIZE);
    if (g.readBigUInt64BE(0) !== P.NBD_INIT_MAGIC || g.readBigUInt64BE(8) !== P.NBD_OPTS_MAGIC) throw new Error("bad greeting");
    const f = Buffer.alloc(4);
    f.writeUInt32BE(clientFlags, 0);
    this.write(f);
    return g.readUInt16BE(16);
  }

  async readOptionReply(): Promise<OptionReply> {
    const h = await this.read(P.OPTION_REPLY_HEADER_SIZE);
    if (h.readBigUInt64BE(0) !== P.NBD_REP_MAGIC) throw new Error("bad option reply magic");
    const length = h.readUInt32BE(16);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await this.read(length) };
  }

  /** NBD_OPT_INFO or NBD_OPT_GO: the NBD_REP_INFO replies up to the final one (returned last). */
  async info(option: number, name: string, requests?: number[]): Promise<OptionReply[]> {
    this.write(encodeOption(option, encodeInfoRequest(name, requests)));
    const replies: OptionReply[] = [];
    for (;;) {
      const r = await this.readOptionReply();
      replies.push(r);
      if (r.type !== P.NBD_REP_INFO) return replies;
    }
  }

  /** Handshake + NBD_OPT_GO; returns the export's size and transmission flags. */
  async open(name = ""): Promise<{ size: number; flags: number }> {
    await this.handshake();
    const replies = await this.info(P.NBD_OPT_GO, name);
    const last = replies[replies.length - 1];
    if (last === undefined || last.type !== P.NBD_REP_ACK) throw new Error(`NBD_OPT_GO failed: reply type 0x${last?.type.toString(16)}`);
    const exp = replies.find((r) => r.type === P.NBD_REP_INFO && r.data.readUInt16BE(0) === P.NBD_INFO_EXPORT);
    if (exp === undefined) throw new Error("no NBD_INFO_EXPORT");
    return { size: Number(exp.data.readBigUInt64BE(2)), flags: exp.data.readUInt16BE(10) };
  }

  /** Reads one simple reply; `dataLength` bytes of data follow a successful READ's. */
  async readSimpleReply(dataLength = 0): Promise<SimpleReply> {
    const h = await this.read(P.SIMPLE_REPLY_HEADER_SIZE);
    if (h.readUInt32BE(0) !== P.NBD_SIMPLE_REPLY_MAGIC) throw new Error("bad simple reply magic");
    const error = h.readUInt32BE(4);
    const data = error === 0 && dataLength > 0 ? await this.read(dataLength) : Buffer.alloc(0);
    return { error, cookie: h.readBigUInt64BE(8), data };
  }

  /** Sends one request and reads its reply. */
  async request(r: RequestFields): Promise<SimpleReply> {
    this.write(encodeRequest(r));
    return this.readSimpleReply(r.type === P.NBD_CMD_READ ? (r.length ?? 0) : 0);
  }

  private serve(): void {
    const w = this.waiter;
    if (w === undefined) return;
    if (this.queue.length >= w.n) {
      this.waiter = undefined;
      w.resolve(Buffer.from(this.queue.take(w.n)));
    } else if (this.ended) {
      this.waiter = undefined;
      w.reject(new Error(`connection closed with ${this.queue.length} of ${w.n} bytes`));
    }
  }
}
