/**
 * One writable image's activity log as a daemon keeps it (activity-log.ts
 * is the file): what the log beside the image says, replacing it whole,
 * deleting it, and, while a log is kept "marking", the write-ahead hook
 * that marks every write's chunks before the write touches the image. The
 * session code (src/colo/primary-disk-logs.ts, secondary-disk-logs.ts)
 * sees it as `DiskLog`; the daemon makes one per image and hands its hook
 * to the raw image (`RawDiskBackend.beforeWrite`).
 */
import { ActivityLog, logPathOf, readLog, removeLog, type ActivityLogOptions, type LogContents, type LogHeader } from "./activity-log.js";
import { DiskReplicationError } from "./errors.js";

/** What the log beside an image says. */
export type LogRead = { kind: "none" } | { kind: "bad"; problem: string } | { kind: "ok"; log: LogContents };

/** An image's activity log, as the replication sessions use it. */
export interface DiskLog {
  /** The image's path (for log lines). */
  readonly imagePath: string;
  /** What the log says now (what this process keeps, else the file). */
  read(): LogRead;
  /** Writes the log whole, atomically; with `mark`, every later write of the image is marked in it first (write-ahead), else none is. */
  replace(header: LogHeader, chunks: Iterable<number>, mark: boolean): void;
  /** Deletes the log, durably; later writes are not marked. */
  remove(): void;
  /** Later writes are marked (a log kept with `mark`). */
  readonly marking: boolean;
}

export class ImageLog implements DiskLog {
  private open: ActivityLog | undefined;

  constructor(
    readonly imagePath: string,
    /** Puts the write-ahead hook on the image (undefined: none). */
    private readonly setBeforeWrite: (hook: ((offset: number, length: number) => void) | undefined) => void,
    private readonly opts: ActivityLogOptions = {},
  ) {}

  get marking(): boolean {
    return this.open !== undefined;
  }

  /** The log kept open for marking, if any (tests, status). */
  get active(): ActivityLog | undefined {
    return this.open;
  }

  read(): LogRead {
    const open = this.open;
    if (open) return { kind: "ok", log: { header: open.header, chunks: open.chunks() } };
    try {
      const log = readLog(this.imagePath);
      return log ? { kind: "ok", log } : { kind: "none" };
    } catch (err) {
      if (err instanceof DiskReplicationError) return { kind: "bad", problem: err.message };
      throw err;
    }
  }

  replace(header: LogHeader, chunks: Iterable<number>, mark: boolean): void {
    if (this.open && mark) {
      this.open.replace(header, chunks);
      return;
    }
    this.stopMarking();
    const log = ActivityLog.create(this.imagePath, header, chunks, this.opts);
    if (!mark) {
      log.close();
      return;
    }
    this.open = log;
    this.setBeforeWrite((offset, length) => this.mark(log, offset, length));
  }

  /**
   * The write-ahead mark. A log that cannot be marked (its disk full or
   * failing) is deleted, and the guest's write goes on: no log claims
   * nothing. Only when it cannot be deleted either does the write fail
   * (before it touches the image), as a log left behind would then claim
   * less than the image holds.
   */
  private mark(log: ActivityLog, offset: number, length: number): void {
    try {
      log.mark(offset, length);
    } catch (err) {
      this.stopMarking();
      removeLog(this.imagePath);
      this.opts.onDropped?.(err as Error);
    }
  }

  remove(): void {
    this.stopMarking();
    removeLog(this.imagePath);
  }

  /** The image is closed: stop marking (the log stays as it is). */
  close(): void {
    this.stopMarking();
  }

  private stopMarking(): void {
    this.setBeforeWrite(undefined);
    this.open?.close();
    this.open = undefined;
  }

  get path(): string {
    return logPathOf(this.imagePath);
  }
}
