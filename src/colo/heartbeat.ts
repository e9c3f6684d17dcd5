/**
 * Heartbeats on the replication connection (COLO-PROTOCOL.md §5): each side
 * writes a HEARTBEAT record when it has written nothing for `intervalMs`,
 * so the peer hears from it at least that often; the peer treats silence
 * longer than its timeout (any record counts) as the loss of this side.
 * Writes go through the session's lock so a heartbeat never lands inside a
 * checkpoint's records.
 */
import type { StreamWriter } from "../state/index.js";
import { monotonicMs, type Clock } from "../sys/clock.js";

/** Defaults (docs/replication.md): a heartbeat every 200 ms; 1 s of silence is a loss. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 200;
export const DEFAULT_PEER_TIMEOUT_MS = 1000;
/** Silence allowed before checkpoint 0 (disk hashing at about 1 s per GiB on either side, the memory transfer). */
export const INITIAL_SYNC_SILENCE_MS = 120_000;

/** Serializes a session's writes: one record sequence at a time. */
export class WriteLock {
  private tail: Promise<unknown> = Promise.resolve();
  private held = false;

  get busy(): boolean {
    return this.held;
  }

  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(async () => {
      this.held = true;
      try {
        return await fn();
      } finally {
        this.held = false;
      }
    });
    this.tail = next.catch(() => undefined);
    return next;
  }
}

export class HeartbeatSender {
  private sequence = 0;
  private lastWrite: number;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly writer: StreamWriter,
    private readonly lock: WriteLock,
    private readonly intervalMs: number,
    /** False while the stream is at a place a heartbeat may not go (before checkpoint 0 on the forward stream). */
    private readonly allowed: () => boolean,
    private readonly onError: (err: Error) => void,
    /** This host's monotonic clock (also the heartbeat's informational sender_time_ms). */
    private readonly now: Clock = monotonicMs,
  ) {
    this.lastWrite = now();
    this.timer = setInterval(() => this.tick(), Math.max(10, Math.floor(intervalMs / 2)));
  }

  /** Call after any write: a heartbeat is only needed when nothing else was sent. */
  wrote(): void {
    this.lastWrite = this.now();
  }

  private tick(): void {
    if (this.lock.busy || !this.allowed() || this.now() - this.lastWrite < this.intervalMs) return;
    this.lastWrite = this.now();
    this.lock
      .run(() => this.writer.writeHeartbeat({ sequence: this.sequence++, senderTimeMs: Math.floor(this.now()) }))
      .catch((err: unknown) => this.onError(err as Error));
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/**
 * Declares the peer lost when nothing was *read* from it for `limitMs()`.
 * Node's socket.setTimeout() cannot do this: it counts our own writes as
 * activity, and writes into a connection whose link is down still succeed
 * (the kernel buffers them), so a side that sends heartbeats would never
 * notice that its peer went silent.
 */
export class SilenceWatchdog {
  private lastHeard: number;
  private readonly timer: NodeJS.Timeout;
  private deciding = false;
  private stopped = false;
  private excused = 0;

  constructor(
    private readonly limitMs: () => number,
    private readonly onSilent: (silentMs: number) => void,
    checkEveryMs = 50,
    /** Silence is measured on this host's monotonic clock: a wall-clock step neither fakes nor hides it. */
    private readonly now: Clock = monotonicMs,
  ) {
    this.lastHeard = now();
    this.timer = setInterval(() => {
      if (this.deciding || this.excused > 0 || this.now() - this.lastHeard <= this.limitMs()) return;
      // When our own event loop was blocked (a page compare, a large copy), the
      // peer's bytes wait in the kernel, and timers run before the poll phase
      // reads them: a stall of ours would look like the peer's silence. Decide
      // in the check phase (setImmediate), after this turn's poll has read
      // whatever arrived.
      this.deciding = true;
      setImmediate(() => {
        this.deciding = false;
        if (this.stopped || this.excused > 0) return;
        const silent = this.now() - this.lastHeard;
        if (silent > this.limitMs()) {
          this.stop();
          this.onSilent(silent);
        }
      });
    }, checkEveryMs);
  }

  heard(): void {
    this.lastHeard = this.now();
  }

  /**
   * Runs `work` (our own long step, e.g. a secondary loading a checkpoint
   * into its engine while the primary waits for it) without counting its
   * time as the peer's silence; the window starts afresh when it ends. A
   * peer that dies meanwhile is noticed after it (its socket closes, or
   * nothing is heard for the limit from then on).
   */
  async excusing<T>(work: () => Promise<T>): Promise<T> {
    this.excused++;
    try {
      return await work();
    } finally {
      this.excused--;
      this.heard();
    }
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }
}
