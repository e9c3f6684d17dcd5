/**
 * Pulls exact byte counts from any byte source: an AsyncIterable of chunks
 * (a Node Readable, a socket), an Iterable of chunks, or one Uint8Array
 * (tests, files read whole). Never holds more than the current chunk plus
 * the bytes asked for; a source that ends early yields TRUNCATED, one that
 * fails yields IO.
 */
import { StreamError, type StreamLocation } from "./errors.js";

export type ByteSource = AsyncIterable<Uint8Array> | Iterable<Uint8Array> | Uint8Array;

const EMPTY = new Uint8Array(0);

type ChunkIterator = AsyncIterator<unknown> | Iterator<unknown>;

function iteratorOf(source: ByteSource): ChunkIterator {
  if (source instanceof Uint8Array) return [source][Symbol.iterator]();
  if (Symbol.asyncIterator in source) return source[Symbol.asyncIterator]();
  return source[Symbol.iterator]();
}

export class ByteSourceReader {
  private readonly iterator: ChunkIterator;
  private chunk: Uint8Array = EMPTY;
  private position = 0;
  private sourceEnded = false;
  private consumed = 0;

  constructor(source: ByteSource) {
    this.iterator = iteratorOf(source);
  }

  /** Octets consumed so far: the stream offset of the next octet. */
  get offset(): number {
    return this.consumed;
  }

  /** Make at least one unread octet available; false when the source has ended. */
  private async fill(): Promise<boolean> {
    while (this.position >= this.chunk.length) {
      if (this.sourceEnded) return false;
      let result: IteratorResult<unknown>;
      try {
        result = await this.iterator.next();
      } catch (err) {
        this.sourceEnded = true;
        throw new StreamError("IO", undefined, `the byte source failed at offset ${this.consumed}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
      if (result.done === true) {
        this.sourceEnded = true;
        return false;
      }
      const value = result.value;
      if (!(value instanceof Uint8Array)) {
        this.sourceEnded = true;
        throw new StreamError("IO", undefined, `the byte source yielded ${typeof value}, not bytes (a stream with an encoding set?)`);
      }
      this.chunk = value;
      this.position = 0;
    }
    return true;
  }

  /** True when no octet is left: the source ended at this offset. */
  async atEnd(): Promise<boolean> {
    return !(await this.fill());
  }

  /**
   * The next `length` octets, in a fresh buffer the caller owns. The caller
   * bounds `length` before calling (every allocation here is that size).
   */
  async readExact(length: number, where: StreamLocation): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    let filled = 0;
    while (filled < length) {
      if (!(await this.fill())) {
        throw new StreamError("TRUNCATED", where, `the stream ended after ${filled} of ${length} octets`);
      }
      const take = Math.min(length - filled, this.chunk.length - this.position);
      out.set(this.chunk.subarray(this.position, this.position + take), filled);
      this.position += take;
      this.consumed += take;
      filled += take;
    }
    return out;
  }

  /** Discard the next `length` octets without buffering them. */
  async skip(length: number, where: StreamLocation): Promise<void> {
    let skipped = 0;
    while (skipped < length) {
      if (!(await this.fill())) {
        throw new StreamError("TRUNCATED", where, `the stream ended after ${skipped} of ${length} octets`);
      }
      const take = Math.min(length - skipped, this.chunk.length - this.position);
      this.position += take;
      this.consumed += take;
      skipped += take;
    }
  }

  /**
   * The next line (without its LF), UTF-8, at most `maxBytes` octets before
   * the LF; undefined when the source ends before any octet of it. A line
   * longer than that, or cut by the end of the source, is BAD_LENGTH or
   * TRUNCATED at `where`.
   */
  async readLine(maxBytes: number, where: StreamLocation): Promise<string | undefined> {
    const parts: Uint8Array[] = [];
    let length = 0;
    for (;;) {
      if (!(await this.fill())) {
        if (length === 0) return undefined;
        throw new StreamError("TRUNCATED", where, `the connection ended inside a line (${length} octets, no LF)`);
      }
      const rest = this.chunk.subarray(this.position);
      const lf = rest.indexOf(0x0a);
      const take = lf >= 0 ? lf : rest.length;
      if (length + take > maxBytes) throw new StreamError("BAD_LENGTH", where, `a line longer than ${maxBytes} octets`);
      parts.push(rest.slice(0, take));
      length += take;
      this.position += take + (lf >= 0 ? 1 : 0);
      this.consumed += take + (lf >= 0 ? 1 : 0);
      if (lf >= 0) return Buffer.concat(parts).toString("utf8");
    }
  }

  /** Octets already pulled from the source but not consumed (for a transport that reuses the connection). */
  takeBuffered(): Uint8Array {
    const rest = this.chunk.slice(this.position);
    this.chunk = EMPTY;
    this.position = 0;
    return rest;
  }
}
