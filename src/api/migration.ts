/**
 * Live migration between two colo hosts (docs/migration.md): the source
 * connects over an authenticated channel (TLS-PSK), sends VM_CONFIG,
 * ENGINE_COMPAT and the machine with pre-copy rounds, then waits for the
 * destination's one-line answer (which comes early, and stops the sending,
 * when the destination refuses the stream, e.g. an incompatible engine).
 * The source VM is destroyed only after the destination says its copy
 * runs; on any failure the source resumes its guest.
 */
import type { TLSSocket } from "node:tls";
import { ChannelError, connectSecure, listenSecure, type Endpoint, type SecureListener } from "../channel/secure-channel.js";
import type { Engine } from "../engine/engine.js";
import { machineHeader, StreamReader, StreamWriter, teeSink, writableSink } from "../state/index.js";
import type { SendResult, TransferProgress } from "../state/machine-transfer.js";
import { readConfig, writeImage, type ConfigSource } from "./image-io.js";
import type { StreamCapture } from "./stream-capture.js";
import type { VmConfig } from "../config/index.js";
import { elapsedMs } from "../sys/clock.js";

/** Default TCP port of `colo migrate-receive`. */
export const DEFAULT_MIGRATION_PORT = 8002;

/** How long the source waits for the destination's answer after the stream (loading state + resuming). */
const ANSWER_TIMEOUT_MS = 60_000;

/** The destination's answer after the stream's END: one JSON line. */
export type MigrationAnswer = { ok: true; resumeMs: number } | { ok: false; error: string };

function parseAnswer(line: string): MigrationAnswer {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    throw new Error(`the destination answered something that is not JSON: ${JSON.stringify(line.slice(0, 80))}`);
  }
  const a = v as { ok?: unknown; error?: unknown; resumeMs?: unknown };
  if (a.ok === true && typeof a.resumeMs === "number") return { ok: true, resumeMs: a.resumeMs };
  if (a.ok === false && typeof a.error === "string") return { ok: false, error: a.error };
  throw new Error("the destination's answer has neither ok:true nor ok:false with an error");
}

/** The destination's answer line; the caller bounds the wait (the stream may take long before it). */
function readAnswer(socket: TLSSocket): Promise<MigrationAnswer> {
  return new Promise((resolve, reject) => {
    let buffered = "";
    const done = (err?: Error, answer?: MigrationAnswer) => {
      socket.off("data", onData);
      socket.off("close", onClose);
      socket.off("error", onError);
      if (err) reject(err);
      else if (answer) resolve(answer);
    };
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      const nl = buffered.indexOf("\n");
      if (nl >= 0) {
        try {
          done(undefined, parseAnswer(buffered.slice(0, nl)));
        } catch (err) {
          done(err as Error);
        }
      } else if (buffered.length > 65536) done(new Error("the destination's answer is too long"));
    };
    const onClose = () => done(new Error("the destination closed the connection without answering"));
    const onError = (err: Error) => done(new Error(`connection to the destination failed: ${err.message}`));
    socket.on("data", onData);
    socket.once("close", onClose);
    socket.once("error", onError);
  });
}

export interface MigrateOutcome {
  send: SendResult;
  answer: MigrationAnswer;
  /** Source pause to destination answer: an upper bound of the guest's downtime. */
  downtimeMs: number;
}

/**
 * Sends the VM to `to`. Throws ChannelError (cannot connect, wrong key) or
 * StreamError/Error (transfer failed) or resolves with the answer; the
 * caller resumes its guest unless `answer.ok`.
 */
export async function migrateOut(
  engine: Engine,
  config: ConfigSource,
  to: Endpoint,
  key: Buffer,
  pause: () => Promise<void>,
  onProgress: (p: TransferProgress) => void,
  /** COLO_CAPTURE_DIR: a plaintext copy of the stream, opened once connected (openStreamCapture()). */
  openCapture?: () => StreamCapture | undefined,
): Promise<MigrateOutcome> {
  const socket = await connectSecure(to, key);
  const capture = openCapture?.();
  try {
    const wire = writableSink(socket);
    const writer = new StreamWriter(capture ? teeSink(wire, capture.sink) : wire, { machine: machineHeader(engine.id, engine.memoryBytes) });
    const answer = readAnswer(socket);
    answer.catch(() => undefined); // observed below; a failure while sending surfaces there
    // A destination that refuses the stream early (e.g. its engine cannot load this one's state:
    // ENGINE_COMPAT, the first record after VM_CONFIG) answers at once: stop sending, the catch below says why.
    answer.then(
      (a) => {
        if (!a.ok) socket.destroy();
      },
      () => undefined,
    );
    let send: SendResult;
    try {
      send = await writeImage(engine, writer, config, { live: true, pause, onProgress });
    } catch (err) {
      // A destination that refuses the stream says why before it hangs up.
      const early = await Promise.race([answer.catch(() => undefined), new Promise<undefined>((r) => setTimeout(() => r(undefined), 1000).unref())]);
      if (early && !early.ok) throw new Error(`the destination refused the migration: ${early.error}`);
      throw err;
    }
    const result = await Promise.race([
      answer,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no answer from the destination within ${ANSWER_TIMEOUT_MS / 1000} s`)), ANSWER_TIMEOUT_MS).unref()),
    ]);
    return { send, answer: result, downtimeMs: elapsedMs(send.pausedAt) };
  } finally {
    socket.destroy();
    await capture?.close();
  }
}

export interface Incoming {
  socket: TLSSocket;
  reader: StreamReader;
  config: VmConfig;
  source: ConfigSource;
  peer: string;
  answer(a: MigrationAnswer): Promise<void>;
}

/**
 * Waits for one incoming migration on `at` (one attempt, like
 * `xl migrate-receive`): a peer with another key, or a stream whose first
 * record is not a valid VM_CONFIG, fails it.
 */
export async function acceptIncoming(
  at: Endpoint,
  key: Buffer,
  timeoutMs: number,
  onListening: (address: Endpoint) => void,
): Promise<Incoming> {
  let listener: SecureListener | undefined;
  try {
    const socket = await new Promise<TLSSocket>((resolve, reject) => {
      const timer = setTimeout(() => reject(new ChannelError(`${at.host}:${at.port}`, "TIMEOUT", `no migration arrived within ${timeoutMs / 1000} s`)), timeoutMs);
      listenSecure(
        at,
        key,
        (s) => {
          clearTimeout(timer);
          resolve(s);
        },
        (err) => {
          clearTimeout(timer);
          reject(err);
        },
      ).then(
        (l) => {
          listener = l;
          onListening(l.address);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err);
        },
      );
    });
    const peer = `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}`;
    const reader = new StreamReader(socket);
    try {
      const { config, source } = await readConfig(reader, `migration from ${peer}`);
      const answer = (a: MigrationAnswer) =>
        new Promise<void>((resolve) => {
          if (socket.destroyed) return resolve();
          socket.write(JSON.stringify(a) + "\n", () => resolve());
        });
      return { socket, reader, config, source, peer, answer };
    } catch (err) {
      socket.write(JSON.stringify({ ok: false, error: (err as Error).message }) + "\n");
      socket.end();
      throw err;
    }
  } finally {
    // Stop accepting; close() resolves only when the accepted connection ends, so do not wait.
    void listener?.close();
  }
}
