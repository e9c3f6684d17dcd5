/**
 * The NBD wire protocol, server side: constants and message layouts, each
 * declared once. Source: the NBD protocol specification, doc/proto.md of
 * https://github.com/NetworkBlockDevice/nbd (read at commit 89ba7b53, 2026-05);
 * section names below are that document's. All integers are big-endian.
 *
 * Only what our server speaks is here: fixed newstyle handshake, simple
 * replies, no TLS, no structured replies, no metadata contexts.
 */

// ---- Handshake ("Newstyle negotiation", "Fixed newstyle negotiation") ----

/** S: 64 bits, ASCII "NBDMAGIC" (INIT_PASSWD). */
export const NBD_INIT_MAGIC = 0x4e42444d41474943n;
/** S/C: 64 bits, ASCII "IHAVEOPT": the newstyle magic, also at the start of every option. */
export const NBD_OPTS_MAGIC = 0x49484156454f5054n;
/** S: 64 bits, magic of every option reply. */
export const NBD_REP_MAGIC = 0x3e889045565a9n;

/** Handshake flags (16 bits, "Handshake flags"). */
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;

/** Client flags (32 bits, "Client flags"); any other bit set: the server MUST drop the connection. */
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

/** Server greeting: NBDMAGIC (8) + IHAVEOPT (8) + handshake flags (2). */
export const GREETING_SIZE = 18;
/** Client flags: 32 bits. */
export const CLIENT_FLAGS_SIZE = 4;
/** Option header: IHAVEOPT (8) + option (4) + data length (4). */
export const OPTION_HEADER_SIZE = 16;
/** Option reply header: magic (8) + option (4) + reply type (4) + data length (4). */
export const OPTION_REPLY_HEADER_SIZE = 20;
/** Reply to NBD_OPT_EXPORT_NAME: size (8) + transmission flags (2), then 124 zero bytes unless NO_ZEROES. */
export const EXPORT_NAME_REPLY_SIZE = 10;
export const EXPORT_NAME_REPLY_ZEROES = 124;

/** Strings (export names, messages) MUST be no longer than 4096 bytes ("Conventions"). */
export const NBD_MAX_STRING = 4096;

/** Option types ("Option types"). */
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;

/** Option reply types ("Option reply types"); errors have bit 31 set. */
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
const NBD_REP_FLAG_ERROR = 2 ** 31;
export const NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR + 1;
export const NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR + 2;
export const NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR + 3;
export const NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR + 6;
export const NBD_REP_ERR_TOO_BIG = NBD_REP_FLAG_ERROR + 9;

/** Information types in NBD_REP_INFO ("NBD_REP_INFO"). */
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

/** Transmission flags (16 bits, "Transmission flags"). */
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;

// ---- Transmission ("Request message", "Simple reply message") ----

/** C: 32 bits, request magic. */
export const NBD_REQUEST_MAGIC = 0x25609513;
/** S: 32 bits, simple reply magic (was NBD_REPLY_MAGIC). */
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;

/** Request header: magic (4) + command flags (2) + type (2) + cookie (8) + offset (8) + length (4). */
export const REQUEST_HEADER_SIZE = 28;
/** Simple reply header: magic (4) + error (4) + cookie (8); a successful READ's data follows. */
export const SIMPLE_REPLY_HEADER_SIZE = 16;

/** Request types ("Request types"). */
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

/** Command flags (16 bits, "Command flags"). */
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

/** Error values in replies ("Error values"). */
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

/** Size constraints a client gets when it asks nothing ("Size constraints"): 32 MiB payloads must be accepted. */
export const NBD_DEFAULT_MAX_PAYLOAD = 2 ** 25;
/** The minimum block size MUST be a power of 2 no larger than 2^16. */
export const NBD_MAX_MIN_BLOCK = 2 ** 16;

// ---- Encoders ----

/** The server's first message. */
export function encodeGreeting(handshakeFlags: number): Buffer {
  const b = Buffer.alloc(GREETING_SIZE);
  b.writeBigUInt64BE(NBD_INIT_MAGIC, 0);
  b.writeBigUInt64BE(NBD_OPTS_MAGIC, 8);
  b.writeUInt16BE(handshakeFlags, 16);
  return b;
}

/** One option reply (header + data). */
export function encodeOptionReply(option: number, replyType: number, data: Uint8Array = new Uint8Array(0)): Buffer {
  const b = Buffer.alloc(OPTION_REPLY_HEADER_SIZE + data.length);
  b.writeBigUInt64BE(NBD_REP_MAGIC, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(replyType >>> 0, 12);
  b.writeUInt32BE(data.length, 16);
  b.set(data, OPTION_REPLY_HEADER_SIZE);
  return b;
}

/** NBD_REP_SERVER data: name length (4) + name. */
export function encodeRepServer(name: Buffer): Buffer {
  const b = Buffer.alloc(4 + name.length);
  b.writeUInt32BE(name.length, 0);
  name.copy(b, 4);
  return b;
}

/** NBD_REP_INFO data for NBD_INFO_EXPORT: type (2) + size (8) + transmission flags (2) = 12. */
export function encodeInfoExport(size: number, transmissionFlags: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(NBD_INFO_EXPORT, 0);
  b.writeBigUInt64BE(BigInt(size), 2);
  b.writeUInt16BE(transmissionFlags, 10);
  return b;
}

/** NBD_REP_INFO data for NBD_INFO_NAME: type (2) + name. */
export function encodeInfoName(name: Buffer): Buffer {
  const b = Buffer.alloc(2 + name.length);
  b.writeUInt16BE(NBD_INFO_NAME, 0);
  name.copy(b, 2);
  return b;
}

/** NBD_REP_INFO data for NBD_INFO_BLOCK_SIZE: type (2) + minimum (4) + preferred (4) + maximum payload (4) = 14. */
export function encodeInfoBlockSize(minimum: number, preferred: number, maximum: number): Buffer {
  const b = Buffer.alloc(14);
  b.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  b.writeUInt32BE(minimum, 2);
  b.writeUInt32BE(preferred, 6);
  b.writeUInt32BE(maximum, 10);
  return b;
}

/** Reply to NBD_OPT_EXPORT_NAME: size + flags, and the 124 reserved zero bytes unless the client set NO_ZEROES. */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(EXPORT_NAME_REPLY_SIZE + (noZeroes ? 0 : EXPORT_NAME_REPLY_ZEROES));
  b.writeBigUInt64BE(BigInt(size), 0);
  b.writeUInt16BE(transmissionFlags, 8);
  return b;
}

/** A simple reply header; for a successful READ the data follows it. */
export function encodeSimpleReply(error: number, cookie: bigint): Buffer {
  const b = Buffer.alloc(SIMPLE_REPLY_HEADER_SIZE);
  b.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error, 4);
  b.writeBigUInt64BE(cookie, 8);
  return b;
}

// ---- Decoders ----

export interface OptionHeader {
  magic: bigint;
  option: number;
  length: number;
}

export function decodeOptionHeader(b: Buffer): OptionHeader {
  return { magic: b.readBigUInt64BE(0), option: b.readUInt32BE(8), length: b.readUInt32BE(12) };
}

/** NBD_OPT_INFO / NBD_OPT_GO data: name length (4) + name + request count (2) + requests (2 each). */
export interface InfoRequest {
  name: Buffer;
  requests: number[];
}

/** Parses NBD_OPT_INFO / NBD_OPT_GO data; undefined when the lengths do not add up (NBD_REP_ERR_INVALID). */
export function decodeInfoRequest(data: Buffer): InfoRequest | undefined {
  if (data.length < 6) return undefined;
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 6) return undefined;
  const name = data.subarray(4, 4 + nameLength);
  const count = data.readUInt16BE(4 + nameLength);
  if (data.length !== 4 + nameLength + 2 + 2 * count) return undefined;
  const requests: number[] = [];
  for (let i = 0; i < count; i++) requests.push(data.readUInt16BE(4 + nameLength + 2 + 2 * i));
  return { name, requests };
}

export interface RequestHeader {
  magic: number;
  flags: number;
  type: number;
  cookie: bigint;
  /** The 64-bit offset; compare as a bigint before turning it into a number. */
  offset: bigint;
  length: number;
}

export function decodeRequestHeader(b: Buffer): RequestHeader {
  return {
    magic: b.readUInt32BE(0),
    flags: b.readUInt16BE(4),
    type: b.readUInt16BE(6),
    cookie: b.readBigUInt64BE(8),
    offset: b.readBigUInt64BE(16),
    length: b.readUInt32BE(24),
  };
}

/** Names for logs. */
export function commandName(type: number): string {
  switch (type) {
    case NBD_CMD_READ: return "READ";
    case NBD_CMD_WRITE: return "WRITE";
    case NBD_CMD_DISC: return "DISC";
    case NBD_CMD_FLUSH: return "FLUSH";
    case NBD_CMD_TRIM: return "TRIM";
    case NBD_CMD_CACHE: return "CACHE";
    case NBD_CMD_WRITE_ZEROES: return "WRITE_ZEROES";
    case NBD_CMD_BLOCK_STATUS: return "BLOCK_STATUS";
    default: return `command ${type}`;
  }
}

export function optionName(option: number): string {
  switch (option) {
    case NBD_OPT_EXPORT_NAME: return "NBD_OPT_EXPORT_NAME";
    case NBD_OPT_ABORT: return "NBD_OPT_ABORT";
    case NBD_OPT_LIST: return "NBD_OPT_LIST";
    case NBD_OPT_STARTTLS: return "NBD_OPT_STARTTLS";
    case NBD_OPT_INFO: return "NBD_OPT_INFO";
    case NBD_OPT_GO: return "NBD_OPT_GO";
    case NBD_OPT_STRUCTURED_REPLY: return "NBD_OPT_STRUCTURED_REPLY";
    case NBD_OPT_LIST_META_CONTEXT: return "NBD_OPT_LIST_META_CONTEXT";
    case NBD_OPT_SET_META_CONTEXT: return "NBD_OPT_SET_META_CONTEXT";
    default: return `option ${option}`;
  }
}
