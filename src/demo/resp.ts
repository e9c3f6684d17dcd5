// RESP2, the Redis serialization protocol (https://redis.io/docs/latest/develop/reference/protocol-spec/):
// encoding commands and replies, and an incremental reply parser that accepts
// any split of the byte stream into chunks.

/** An error reply (`-ERR ...`): a value, not a thrown exception. */
export class RespError {
  constructor(readonly message: string) {}
}

/**
 * A decoded RESP2 value. Simple and bulk strings are both `string` (UTF-8);
 * a null bulk string and a null array are both `null`.
 */
export type RespValue = string | number | null | RespError | RespValue[];

/** The byte stream is not RESP2: the connection cannot be trusted any more. */
export class RespProtocolError extends Error {
  override name = "RespProtocolError";
}

const CRLF = "\r\n";

/** A command as the client sends it: an array of bulk strings. */
export function encodeCommand(args: readonly (string | number)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}${CRLF}`)];
  for (const arg of args) parts.push(encodeBulk(String(arg)));
  return Buffer.concat(parts);
}

export function encodeSimple(s: string): Buffer {
  if (/[\r\n]/.test(s)) throw new RespProtocolError("a simple string cannot hold CR or LF");
  return Buffer.from(`+${s}${CRLF}`);
}

export function encodeError(message: string): Buffer {
  return Buffer.from(`-${message.replace(/[\r\n]/g, " ")}${CRLF}`);
}

export function encodeInteger(n: number): Buffer {
  if (!Number.isInteger(n)) throw new RespProtocolError(`not an integer: ${n}`);
  return Buffer.from(`:${n}${CRLF}`);
}

export function encodeBulk(s: string | null): Buffer {
  if (s === null) return Buffer.from(`$-1${CRLF}`);
  const body = Buffer.from(s, "utf8");
  return Buffer.concat([Buffer.from(`$${body.length}${CRLF}`), body, Buffer.from(CRLF)]);
}

export function encodeArray(items: readonly Buffer[] | null): Buffer {
  if (items === null) return Buffer.from(`*-1${CRLF}`);
  return Buffer.concat([Buffer.from(`*${items.length}${CRLF}`), ...items]);
}

/** A parse that ran out of bytes: wait for the next chunk. */
const INCOMPLETE = Symbol("incomplete");
type Parsed = { value: RespValue; next: number } | typeof INCOMPLETE;

/**
 * Incremental parser: `feed` each chunk as it arrives and get back the values
 * completed by it (zero or more). Bytes of an unfinished value are kept.
 */
export class RespParser {
  private buf: Buffer = Buffer.alloc(0);

  feed(chunk: Buffer): RespValue[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: RespValue[] = [];
    let pos = 0;
    for (;;) {
      const parsed = parseAt(this.buf, pos);
      if (parsed === INCOMPLETE) break;
      out.push(parsed.value);
      pos = parsed.next;
    }
    this.buf = this.buf.subarray(pos);
    return out;
  }

  /** Bytes received but not yet part of a complete value. */
  get pending(): number {
    return this.buf.length;
  }
}

function readLine(buf: Buffer, pos: number): { line: string; next: number } | typeof INCOMPLETE {
  const end = buf.indexOf(CRLF, pos, "latin1");
  if (end < 0) return INCOMPLETE;
  return { line: buf.toString("utf8", pos, end), next: end + 2 };
}

function parseLength(text: string, what: string): number {
  if (!/^-?\d+$/.test(text)) throw new RespProtocolError(`bad ${what}: ${JSON.stringify(text)}`);
  return Number(text);
}

function parseAt(buf: Buffer, pos: number): Parsed {
  if (pos >= buf.length) return INCOMPLETE;
  const header = readLine(buf, pos + 1);
  if (header === INCOMPLETE) return INCOMPLETE;
  const { line, next } = header;
  const type = String.fromCharCode(buf[pos]!);
  switch (type) {
    case "+":
      return { value: line, next };
    case "-":
      return { value: new RespError(line), next };
    case ":": {
      const n = parseLength(line, "integer");
      if (!Number.isSafeInteger(n)) throw new RespProtocolError(`integer out of range: ${line}`);
      return { value: n, next };
    }
    case "$": {
      const len = parseLength(line, "bulk length");
      if (len === -1) return { value: null, next };
      if (len < 0) throw new RespProtocolError(`bad bulk length: ${len}`);
      if (buf.length < next + len + 2) return INCOMPLETE;
      if (buf[next + len] !== 0x0d || buf[next + len + 1] !== 0x0a) {
        throw new RespProtocolError("bulk string not followed by CRLF");
      }
      return { value: buf.toString("utf8", next, next + len), next: next + len + 2 };
    }
    case "*": {
      const count = parseLength(line, "array length");
      if (count === -1) return { value: null, next };
      if (count < 0) throw new RespProtocolError(`bad array length: ${count}`);
      const items: RespValue[] = [];
      let at = next;
      for (let i = 0; i < count; i++) {
        const item = parseAt(buf, at);
        if (item === INCOMPLETE) return INCOMPLETE;
        items.push(item.value);
        at = item.next;
      }
      return { value: items, next: at };
    }
    default:
      throw new RespProtocolError(`unknown RESP type byte 0x${buf[pos]!.toString(16)}`);
  }
}
