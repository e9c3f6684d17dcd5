/**
 * Lines and runs of raw bytes over one socket, each read bounded in size
 * and in time: what the `colo check` probe speaks on both ends
 * (check-probe.ts, check-probe-client.ts). The socket is read only while a
 * read waits (paused otherwise), so a peer that sends more than is asked
 * for fills its own buffers, not ours.
 */
import type { Duplex } from "node:stream";
import { monotonicMs } from "../sys/clock.js";

/** ENDED: the connection ended between lines; TRUNCATED: inside one. */
export type WireErrorCode = "TIMEOUT" | "TOO_LONG" | "ENDED" | "TRUNCATED" | "IO";

export class WireError extends Error {
  constructor(
    readonly code: WireErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "WireError";
  }
}

export interface DrainResult {
  bytes: number;
  /** From the drain's start to the last byte counted (monotonic). */
  ms: number;
}

export class LineWire {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;

  constructor(private readonly socket: Duplex) {
    socket.pause();
    socket.on("data", (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      this.wake?.();
    });
    socket.on("end", () => {
      this.ended = true;
      this.wake?.();
    });
    socket.on("close", () => {
      this.ended = true;
      this.wake?.();
    });
    socket.on("error", (err: Error) => {
      this.failure ??= err;
      this.wake?.();
    });
  }

  /** Waits for more input until `deadline` (monotonic ms); false when the deadline passed first. */
  private async more(deadline: number): Promise<boolean> {
    const left = deadline - monotonicMs();
    if (left <= 0) return false;
    this.socket.resume();
    try {
      return await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), left);
        this.wake = () => {
          clearTimeout(timer);
          resolve(true);
        };
      });
    } finally {
      this.wake = undefined;
      this.socket.pause();
    }
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    return out;
  }

  private endedError(what: string): WireError {
    if (this.failure) return new WireError("IO", `${what}: ${this.failure.message}`);
    if (this.buffered > 0) return new WireError("TRUNCATED", `${what}: the connection ended inside a line (${this.buffered} octets without a newline)`);
    return new WireError("ENDED", `${what}: the connection ended`);
  }

  /** The next line (without its newline), at most `maxBytes`, within `timeoutMs`. `what` names it in errors. */
  async readLine(maxBytes: number, timeoutMs: number, what: string): Promise<string> {
    const deadline = monotonicMs() + timeoutMs;
    for (;;) {
      let seen = 0;
      for (const c of this.chunks) {
        const nl = c.indexOf(0x0a);
        if (nl >= 0) {
          if (seen + nl > maxBytes) break;
          const line = this.take(seen + nl + 1).subarray(0, seen + nl).toString("utf8");
          return line.endsWith("\r") ? line.slice(0, -1) : line;
        }
        seen += c.length;
      }
      if (this.buffered > maxBytes) throw new WireError("TOO_LONG", `${what}: a line longer than ${maxBytes} octets`);
      if (this.failure || this.ended) throw this.endedError(what);
      if (!(await this.more(deadline))) throw new WireError("TIMEOUT", `${what}: no whole line within ${timeoutMs} ms (${this.buffered} octets read)`);
    }
  }

  /**
   * Counts and discards up to `maxBytes` octets, until `maxMs` after the
   * call: a sink that measures how fast the peer can send. What the peer
   * sends after the limit stays unread.
   */
  async drain(maxBytes: number, maxMs: number): Promise<DrainResult> {
    const start = monotonicMs();
    const deadline = start + maxMs;
    let bytes = 0;
    let last = start;
    for (;;) {
      if (this.buffered > 0) {
        const n = Math.min(this.buffered, maxBytes - bytes);
        this.take(n);
        bytes += n;
        last = monotonicMs();
      }
      if (bytes >= maxBytes || this.failure || this.ended) break;
      if (!(await this.more(deadline))) break;
    }
    return { bytes, ms: Math.max(0, last - start) };
  }
}
