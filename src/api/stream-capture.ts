/**
 * COLO_CAPTURE_DIR (docs/cli.md): a daemon started with it set writes a
 * plaintext copy of every stream it sends to another host — a live
 * migration out, a primary's replication forward stream — into that
 * folder, for `colo stream verify`. The channel encrypts the stream on the
 * wire; this copy is taken before the channel, octet for octet what the
 * peer's reader gets. It holds the guest's memory in clear: mode 600, in a
 * folder of mode 700.
 *
 * The copy never fails the stream: an error of the capture file (a full
 * disk) is logged once and the copy ends there. The writer waits until
 * each chunk is written to the file, as it waits for the socket: a slow
 * disk slows the stream instead of filling memory, and what was sent is in
 * the file even when the daemon exits right after.
 */
import { createWriteStream, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { ByteSink } from "../state/index.js";

export const CAPTURE_DIR_ENV = "COLO_CAPTURE_DIR";

export type CaptureKind = "migration" | "replication";

/** What a capture logs through (the daemon's pino Logger is one). */
export interface CaptureLog {
  info(fields: object, msg: string): void;
  warn(fields: object, msg: string): void;
}

export interface StreamCapture {
  /** The capture file. */
  readonly path: string;
  /** Give this to teeSink() beside the connection's sink; it never rejects. */
  readonly sink: ByteSink;
  /** Ends the file (later writes are dropped); resolves once it is on disk or has failed. */
  close(): Promise<void>;
}

/** `<dir>/<vm>-<kind>-<UTC time>-<pid>.colo`: one file per stream, never one overwritten. */
export function captureFileName(vm: string, kind: CaptureKind, now: Date = new Date()): string {
  const stamp = now.toISOString().replace(/[:.]/g, "-");
  return `${vm}-${kind}-${stamp}-${process.pid}.colo`;
}

/** The capture of one outgoing stream, or undefined when COLO_CAPTURE_DIR is not set (or the folder cannot be made: logged). */
export function openStreamCapture(vm: string, kind: CaptureKind, log: CaptureLog, env: NodeJS.ProcessEnv = process.env): StreamCapture | undefined {
  const dir = env[CAPTURE_DIR_ENV];
  if (dir === undefined || dir === "") return undefined;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    log.warn({ dir, err: (err as Error).message }, `${CAPTURE_DIR_ENV}: cannot make the capture folder; the stream is not captured`);
    return undefined;
  }
  const path = join(dir, captureFileName(vm, kind));
  const file = createWriteStream(path, { flags: "wx", mode: 0o600 });
  let failed = false;
  let closed = false;
  const failedWith = (err: Error): void => {
    if (failed) return;
    failed = true;
    log.warn({ path, err: err.message }, "stream capture failed; the stream goes on without it");
  };
  file.on("error", failedWith);
  log.info({ path, kind }, "capturing the outgoing stream (plaintext)");
  const finished = new Promise<void>((resolve) => file.once("close", () => resolve()));
  return {
    path,
    sink: {
      async write(chunk: Uint8Array): Promise<void> {
        if (failed || closed) return;
        // Resolved once the chunk is written to the file, not when buffered: whatever the writer
        // has sent is in the capture even if the daemon exits right after (its END, at a stop).
        await new Promise<void>((resolve) =>
          file.write(chunk, (err) => {
            if (err) failedWith(err);
            resolve();
          }),
        );
      },
    },
    close(): Promise<void> {
      if (!closed) {
        closed = true;
        if (!file.destroyed) file.end();
      }
      return finished;
    },
  };
}
