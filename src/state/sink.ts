/**
 * Where a StreamWriter's bytes go. A sink resolves write() when it can take
 * more (backpressure). Adapters: a Node Writable (socket, file stream) and
 * an in-memory array for tests. The sink's owner opens and closes it.
 */
import type { Writable } from "node:stream";
import { StreamError } from "./errors.js";

export interface ByteSink {
  /** Take `chunk` (the sink may keep the reference: the writer never reuses it). */
  write(chunk: Uint8Array): Promise<void>;
  /**
   * Resolves when every chunk taken so far has left for the destination (a
   * Writable: handed to the OS, none held back by coalescing), so its owner
   * may close it. What it held back is handed on at the call itself,
   * before flush() first waits (StreamWriter.sendNow relies on it). Absent:
   * nothing is held back.
   */
  flush?(): Promise<void>;
}

/** Collects everything written, for tests and small in-memory streams. */
export class MemorySink implements ByteSink {
  readonly chunks: Uint8Array[] = [];
  private total = 0;

  write(chunk: Uint8Array): Promise<void> {
    this.chunks.push(chunk);
    this.total += chunk.length;
    return Promise.resolve();
  }

  get length(): number {
    return this.total;
  }

  /** Everything written, as one buffer. */
  bytes(): Uint8Array {
    const out = new Uint8Array(this.total);
    let at = 0;
    for (const c of this.chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

/**
 * A sink over a Node Writable: write() resolves at once while the stream's
 * buffer is below its high-water mark, else on 'drain'; it rejects with
 * StreamError IO when the stream fails or closes. The stream's owner still
 * handles its 'error' event and ends it.
 *
 * With `coalesce`, what one callback writes (with the promise chains it
 * starts) leaves in one go: the stream is corked at the first write and
 * uncorked on process.nextTick. StreamWriter writes from inside promise
 * chains, and a tick queued by a microtask runs once every microtask
 * queued meanwhile has run: after the callback's chained writes, before
 * the next event is handled. flush() uncorks at once: an owner that
 * writes a last record and closes the stream in the same callback (the
 * operator's orderly END) loses nothing. The frames one read
 * brings become one TLS write and one send instead of one each (the
 * replication link: every mirrored frame and SVM output frame is a small
 * record), and none waits for other events. (Uncorking at setImmediate,
 * the end of the loop's turn, was tried: fewer writes, but records waited
 * behind the turn's other events; compare-mode throughput fell.)
 */
/** The error a write into a failed destination gets (`err`: the destination's own). */
function writeFailed(err: Error): StreamError {
  return new StreamError("IO", undefined, `write failed: ${err.message}`, { cause: err });
}

export function writableSink(stream: Writable, opts: { coalesce?: boolean } = {}): ByteSink {
  let failure: Error | undefined;
  let corked = false;
  // Settles when the last write's callback has run: that chunk (and every one before it) left for the OS or failed.
  let lastWrite: Promise<void> = Promise.resolve();
  const uncork = (): void => {
    if (!corked) return;
    corked = false;
    if (!stream.destroyed) stream.uncork();
  };
  return {
    async flush(): Promise<void> {
      uncork();
      await lastWrite;
      if (failure !== undefined) throw writeFailed(failure);
    },
    write(chunk: Uint8Array): Promise<void> {
      return new Promise<void>((resolve, reject) => {
        if (failure !== undefined) {
          reject(writeFailed(failure));
          return;
        }
        if (stream.destroyed || stream.writableEnded) {
          reject(new StreamError("IO", undefined, "the destination is closed"));
          return;
        }
        if (opts.coalesce === true && !corked) {
          corked = true;
          stream.cork();
          process.nextTick(uncork);
        }
        let written!: () => void;
        lastWrite = new Promise<void>((res) => (written = res));
        const ok = stream.write(chunk, (err) => {
          if (err) failure ??= err;
          written();
        });
        if (ok) {
          resolve();
          return;
        }
        const cleanup = (): void => {
          stream.off("drain", onDrain);
          stream.off("error", onError);
          stream.off("close", onClose);
        };
        const onDrain = (): void => {
          cleanup();
          resolve();
        };
        const onError = (err: Error): void => {
          cleanup();
          failure ??= err;
          reject(writeFailed(err));
        };
        const onClose = (): void => {
          cleanup();
          reject(new StreamError("IO", undefined, "the destination closed while the writer waited for it to drain"));
        };
        stream.on("drain", onDrain);
        stream.on("error", onError);
        stream.on("close", onClose);
      });
    },
  };
}

/**
 * A sink that hands every chunk to `main` and to `copy` (a capture of the
 * stream as it is sent, `COLO_CAPTURE_DIR`): a write resolves when both have
 * taken the chunk, so a slow copy slows the stream instead of filling
 * memory, and rejects when either rejects. A copy that must never fail the
 * stream swallows its own errors.
 */
export function teeSink(main: ByteSink, copy: ByteSink): ByteSink {
  return {
    async write(chunk: Uint8Array): Promise<void> {
      await Promise.all([main.write(chunk), copy.write(chunk)]);
    },
    async flush(): Promise<void> {
      await Promise.all([main.flush?.(), copy.flush?.()]);
    },
  };
}
