/**
 * Bytes received from a stream socket, queued as the chunks they arrived in,
 * taken off the front in message-sized pieces. A message split across chunks
 * is copied once, when it is taken; one that lies inside a chunk is a view of
 * it (no copy). Nothing is concatenated while a message is still arriving, so
 * a 32 MiB payload arriving in 64 KiB chunks costs one copy, not a quadratic
 * number of them.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  /** Bytes of chunks[0] already taken. */
  private head = 0;
  private total = 0;

  /** Bytes queued. */
  get length(): number {
    return this.total;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.total += chunk.length;
  }

  /** Takes the first `n` bytes (n <= length). The result may be a view of a received chunk. */
  take(n: number): Buffer {
    if (!Number.isInteger(n) || n < 0 || n > this.total) {
      throw new RangeError(`ByteQueue.take(${n}) with ${this.total} bytes queued`);
    }
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0];
    if (first !== undefined && first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.advance(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0];
      if (chunk === undefined) throw new Error("ByteQueue: length and chunks disagree");
      const count = Math.min(chunk.length - this.head, n - filled);
      chunk.copy(out, filled, this.head, this.head + count);
      filled += count;
      this.advance(count);
    }
    return out;
  }

  /** Drops everything queued. */
  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.total = 0;
  }

  /** Moves past `n` bytes of the first chunk (n <= its remaining bytes). */
  private advance(n: number): void {
    this.head += n;
    this.total -= n;
    const first = this.chunks[0];
    if (first !== undefined && this.head === first.length) {
      this.chunks.shift();
      this.head = 0;
    }
  }
}
