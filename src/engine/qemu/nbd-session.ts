/**
 * One NBD client connection, server side (nbd-protocol.ts has the wire
 * format and its source): the fixed newstyle handshake, then transmission
 * with simple replies. Every guest read and write is a synchronous call into
 * the export's BlockBackend; a reply is sent only after the call returned.
 *
 * Requests are handled one at a time in the order they arrive, however the
 * stream is cut into chunks; replies go out in the same order. While the
 * socket cannot take more output, reading stops (backpressure), so neither a
 * flood of pipelined READs nor a peer that does not read grows our memory:
 * at most one message (<= the export's maximum payload) is buffered.
 *
 * A peer that breaks the framing (bad magic, unknown handshake flags, a
 * length we will not buffer, EOF inside a message) is dropped, with the
 * reason logged; nothing else is touched. Bad requests inside a valid frame
 * (out of bounds, unaligned, unknown command or flag) get an error reply and
 * the connection carries on.
 */
import type { Socket } from "node:net";
import { ByteQueue } from "./byte-queue.js";
import { NbdError, type NbdErrorCode } from "./nbd-error.js";
import { TransmissionHandler, type NbdCounters, type NbdExport, type Reply } from "./nbd-transmission.js";
import * as P from "./nbd-protocol.js";

/** Structured log sink; a pino Logger fits. */
export interface NbdLog {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
}

export interface SessionContext {
  /** "nbd <socket path> export <name>": the start of every message. */
  readonly where: string;
  readonly id: number;
  readonly counters: NbdCounters;
  readonly log: NbdLog | undefined;
  /** The session dropped its peer for this reason (already logged). */
  onDrop(err: NbdError): void;
}

/** Option data we buffer at most: an NBD_OPT_GO with a 4096-byte name and a long request list fits. */
export const MAX_OPTION_DATA = 64 * 1024;
/** After we end the connection, a peer that keeps it open is destroyed this much later. */
const LINGER_MS = 2000;

type Phase = "clientFlags" | "optionHeader" | "optionData" | "requestHeader" | "requestPayload" | "closed";

export class NbdSession {
  private readonly queue = new ByteQueue();
  private phase: Phase = "clientFlags";
  /** Bytes the current phase needs before it can run. */
  private need: number = P.CLIENT_FLAGS_SIZE;
  private noZeroes = false;
  private option: P.OptionHeader | undefined;
  private request: P.RequestHeader | undefined;
  private requestIndex = 0;
  private waitingDrain = false;
  private peerEnded = false;
  private readonly transmission: TransmissionHandler;
  private readonly nameBytes: Buffer;

  constructor(
    private readonly socket: Socket,
    private readonly exp: NbdExport,
    private readonly ctx: SessionContext,
  ) {
    this.nameBytes = Buffer.from(exp.name, "utf8");
    this.transmission = new TransmissionHandler(exp, ctx.counters, (fields, message) =>
      ctx.log?.warn({ client: ctx.id, ...fields }, `${ctx.where}: client ${ctx.id}: ${message}`),
    );
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("end", () => this.onEnd());
    socket.on("drain", () => this.onDrain());
    socket.on("error", (err: NodeJS.ErrnoException) => {
      if (this.phase === "closed") return;
      this.drop("SOCKET", `connection failed: ${err.code ?? err.message}`);
    });
    socket.on("close", () => {
      this.phase = "closed";
      this.queue.clear();
    });
    this.send(P.encodeGreeting(P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES));
  }

  get closed(): boolean {
    return this.phase === "closed";
  }

  /** Hard disconnect (server shutdown). */
  destroy(): void {
    this.phase = "closed";
    this.queue.clear();
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    if (this.phase === "closed") return;
    this.queue.push(chunk);
    this.pump();
  }

  private onEnd(): void {
    this.peerEnded = true;
    this.pump();
  }

  private onDrain(): void {
    if (!this.waitingDrain || this.phase === "closed") return;
    this.waitingDrain = false;
    this.socket.resume();
    this.pump();
  }

  /** Runs every message that has fully arrived, unless output is backed up. */
  private pump(): void {
    while (this.phase !== "closed" && !this.waitingDrain && this.queue.length >= this.need) {
      this.step(this.queue.take(this.need));
    }
    if (this.peerEnded && this.phase !== "closed" && !this.waitingDrain) this.atEof();
  }

  private step(bytes: Buffer): void {
    switch (this.phase) {
      case "clientFlags": return this.onClientFlags(bytes.readUInt32BE(0));
      case "optionHeader": return this.onOptionHeader(P.decodeOptionHeader(bytes));
      case "optionData": return this.onOptionData(bytes);
      case "requestHeader": return this.onRequestHeader(P.decodeRequestHeader(bytes));
      case "requestPayload": return this.onRequestPayload(bytes);
      case "closed": return;
    }
  }

  private expect(phase: Phase, need: number): void {
    this.phase = phase;
    this.need = need;
  }

  // ---- handshake ----

  private onClientFlags(flags: number): void {
    const known = P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES;
    if ((flags & ~known) !== 0) {
      return this.drop("BAD_FLAGS", `client flags 0x${hex(flags, 8)} set bits we did not offer (known 0x${hex(known, 8)})`);
    }
    this.noZeroes = (flags & P.NBD_FLAG_C_NO_ZEROES) !== 0;
    this.expect("optionHeader", P.OPTION_HEADER_SIZE);
  }

  private onOptionHeader(h: P.OptionHeader): void {
    if (h.magic !== P.NBD_OPTS_MAGIC) {
      return this.drop("BAD_MAGIC", `option header magic 0x${h.magic.toString(16)} (expected IHAVEOPT 0x${P.NBD_OPTS_MAGIC.toString(16)})`);
    }
    if (h.length > MAX_OPTION_DATA) {
      return this.drop("TOO_LARGE", `${P.optionName(h.option)} with ${h.length} bytes of data (we buffer at most ${MAX_OPTION_DATA})`);
    }
    this.option = h;
    this.expect("optionData", h.length);
  }

  private onOptionData(data: Buffer): void {
    const option = this.option;
    this.expect("optionHeader", P.OPTION_HEADER_SIZE);
    if (option === undefined) return;
    const reply = (type: number, payload?: Uint8Array): void => this.send(P.encodeOptionReply(option.option, type, payload));
    const refuse = (type: number, message: string): void => reply(type, Buffer.from(message, "utf8"));
    switch (option.option) {
      case P.NBD_OPT_EXPORT_NAME:
        if (!this.isOurName(data)) return this.drop("UNKNOWN_EXPORT", `NBD_OPT_EXPORT_NAME for export "${printable(data)}" (we serve "${this.exp.name}")`);
        this.send(P.encodeExportNameReply(this.exp.byteLength, this.exp.transmissionFlags, this.noZeroes));
        return this.enterTransmission("NBD_OPT_EXPORT_NAME");
      case P.NBD_OPT_ABORT:
        reply(P.NBD_REP_ACK);
        this.info("client aborted the handshake (NBD_OPT_ABORT)");
        return this.endGracefully();
      case P.NBD_OPT_LIST:
        if (data.length !== 0) return refuse(P.NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
        reply(P.NBD_REP_SERVER, P.encodeRepServer(this.nameBytes));
        return reply(P.NBD_REP_ACK);
      case P.NBD_OPT_INFO:
      case P.NBD_OPT_GO: {
        const what = P.optionName(option.option);
        const req = P.decodeInfoRequest(data);
        if (req === undefined) return refuse(P.NBD_REP_ERR_INVALID, `${what}: lengths in the option data do not add up`);
        if (!this.isOurName(req.name)) return refuse(P.NBD_REP_ERR_UNKNOWN, `no export "${printable(req.name)}" here (we serve "${this.exp.name}")`);
        reply(P.NBD_REP_INFO, P.encodeInfoExport(this.exp.byteLength, this.exp.transmissionFlags));
        // Sent whether asked or not (allowed: "The server MAY send information requests back which are not explicitly requested").
        reply(P.NBD_REP_INFO, P.encodeInfoBlockSize(this.exp.minBlockSize, this.exp.preferredBlockSize, this.exp.maxPayload));
        if (req.requests.includes(P.NBD_INFO_NAME)) reply(P.NBD_REP_INFO, P.encodeInfoName(this.nameBytes));
        reply(P.NBD_REP_ACK);
        if (option.option === P.NBD_OPT_GO) this.enterTransmission("NBD_OPT_GO");
        return;
      }
      case P.NBD_OPT_STRUCTURED_REPLY:
        return refuse(P.NBD_REP_ERR_UNSUP, "this server sends simple replies only");
      default:
        return refuse(P.NBD_REP_ERR_UNSUP, `${P.optionName(option.option)} is not supported`);
    }
  }

  /** The empty name is the default export ("NBD_OPT_EXPORT_NAME"); the only other name we answer to is our own. */
  private isOurName(name: Buffer): boolean {
    return name.length === 0 || name.equals(this.nameBytes);
  }

  private enterTransmission(how: string): void {
    this.info(`transmission (${how}, ${this.exp.byteLength} bytes${this.exp.readOnly ? ", read-only" : ""})`);
    this.expect("requestHeader", P.REQUEST_HEADER_SIZE);
  }

  // ---- transmission ----

  private onRequestHeader(h: P.RequestHeader): void {
    this.requestIndex++;
    if (h.magic !== P.NBD_REQUEST_MAGIC) {
      return this.drop(
        "BAD_MAGIC",
        `request ${this.requestIndex}: magic 0x${hex(h.magic, 8)} (expected 0x${hex(P.NBD_REQUEST_MAGIC, 8)}); the stream is out of step`,
      );
    }
    if (h.type === P.NBD_CMD_DISC) {
      this.info(`client disconnected (NBD_CMD_DISC) after ${this.requestIndex - 1} request(s)`);
      return this.endGracefully();
    }
    if (h.type === P.NBD_CMD_WRITE) {
      if (h.length > this.exp.maxPayload) {
        return this.drop(
          "TOO_LARGE",
          `request ${this.requestIndex}: WRITE of ${h.length} bytes at ${h.offset} (cookie ${h.cookie}) exceeds the maximum payload ${this.exp.maxPayload}`,
        );
      }
      this.request = h;
      return this.expect("requestPayload", h.length);
    }
    this.respond(this.transmission.handle(h, undefined));
  }

  private onRequestPayload(data: Buffer): void {
    const h = this.request;
    this.request = undefined;
    this.expect("requestHeader", P.REQUEST_HEADER_SIZE);
    if (h !== undefined) this.respond(this.transmission.handle(h, data));
  }

  private respond(reply: Reply): void {
    const header = P.encodeSimpleReply(reply.error, reply.cookie);
    if (reply.data === undefined) return this.send(header);
    this.socket.cork();
    this.socket.write(header);
    this.send(reply.data);
    this.socket.uncork();
  }

  // ---- output, end of connection ----

  private send(bytes: Uint8Array): void {
    if (this.phase === "closed") return;
    if (!this.socket.write(bytes) && !this.waitingDrain) {
      this.waitingDrain = true;
      this.socket.pause();
    }
  }

  /** The peer closed its side; everything complete has been handled. */
  private atEof(): void {
    const inMessage = this.queue.length > 0 || this.phase === "optionData" || this.phase === "requestPayload";
    if (inMessage) {
      const what = this.phase === "requestPayload" ? `the payload of request ${this.requestIndex}` : `a message (${this.phase})`;
      return this.drop("TRUNCATED", `peer closed inside ${what}: ${this.queue.length} of ${this.need} bytes arrived`, false);
    }
    this.info(this.phase === "requestHeader" ? "client closed without NBD_CMD_DISC" : `client closed during the handshake (${this.phase})`);
    this.endGracefully();
  }

  private endGracefully(): void {
    this.phase = "closed";
    this.queue.clear();
    this.socket.end();
    setTimeout(() => this.socket.destroy(), LINGER_MS).unref();
  }

  /** Drops the peer for a protocol violation; with `hard`, replies not yet written are discarded too. */
  private drop(code: NbdErrorCode, reason: string, hard = true): void {
    const err = new NbdError(code, `${this.ctx.where}: client ${this.ctx.id} dropped: ${reason}`);
    this.ctx.log?.warn({ client: this.ctx.id, code }, err.message);
    this.ctx.onDrop(err);
    if (hard) {
      this.destroy();
    } else {
      this.endGracefully();
    }
  }

  private info(message: string): void {
    this.ctx.log?.info({ client: this.ctx.id }, `${this.ctx.where}: client ${this.ctx.id}: ${message}`);
  }
}

function hex(n: number, digits: number): string {
  return (n >>> 0).toString(16).padStart(digits, "0");
}

/** An export name from a peer, safe to print: at most 64 characters, control characters escaped. */
function printable(name: Buffer): string {
  const s = name.subarray(0, 64).toString("utf8");
  return JSON.stringify(s).slice(1, -1) + (name.length > 64 ? "..." : "");
}
