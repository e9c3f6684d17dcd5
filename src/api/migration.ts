/**
 * Live migration between two colo hosts (docs/migration.md): the source
 * connects over an authenticated channel (TLS-PSK), sends VM_CONFIG,
 * ENGINE_COMPAT and the machine with pre-copy rounds, then waits for the
 * destination's one-line answer (which comes early, and stops the sending,
 * when the destination refuses the stream, e.g. an incompatible engine).
 * The source VM is destroyed only after the destination says its copy
 * runs; on any failure the source resumes its guest. The destination
 * drops a connection that does not start a valid migration and waits on
 * for a good one (acceptIncoming).
 */
import type { TLSSocket } from "node:tls";
import { ChannelError, connectSecure, formatEndpoint, listenSecure, remotePeer, type Endpoint, type SecureListener } from "../channel/secure-channel.js";
import type { Engine } from "../engine/engine.js";
import { machineHeader, StreamError, StreamReader, StreamWriter, teeSink, writableSink } from "../state/index.js";
import type { SendResult, TransferProgress } from "../state/machine-transfer.js";
import { readConfig, writeImage, type ConfigSource } from "./image-io.js";
import type { StreamCapture } from "./stream-capture.js";
import { ConfigError, type VmConfig } from "../config/index.js";
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
 * A connecting source has this long for its TLS handshake, and once
 * authenticated this long again for the stream's first record (VM_CONFIG);
 * then it is dropped, so a peer that connects and sends nothing (or too
 * little) cannot hold the port.
 */
export const GREETING_TIMEOUT_MS = 5_000;

/** How long a refused source has to read the refusal before its connection is cut. */
const REFUSAL_LINGER_MS = 1_000;

/** A connection acceptIncoming dropped before one became the migration. */
export interface RejectedPeer {
  /** ADDR:PORT. */
  peer: string;
  /**
   * AUTH (another key), IO (not TLS, reset), TIMEOUT (no handshake, or no
   * VM_CONFIG, in time): the channel's; a StreamError code (BAD_MAGIC,
   * TRUNCATED, BAD_LENGTH, OUT_OF_ORDER, ...); CONFIG (a VM_CONFIG that is
   * not a valid configuration); SUPERSEDED (another source came first).
   */
  code: string;
  /** What was wrong, one line; a stream error names its record and offset. */
  reason: string;
  /** Stream offset of the offending header or record, when there is one. */
  offset?: number;
}

/** The log line of a dropped connection. */
export function describeRejected(r: RejectedPeer): string {
  return `connection from ${r.peer} dropped: ${r.reason}`;
}

export interface AcceptOptions {
  /** Each connection dropped before one was accepted, as it is dropped. */
  onRejected?: (r: RejectedPeer) => void;
  /** Default GREETING_TIMEOUT_MS. */
  greetingTimeoutMs?: number;
}

function rejectionOf(peer: string, err: unknown): RejectedPeer {
  if (err instanceof StreamError) return { peer, code: err.code, reason: err.message, ...(err.offset === undefined ? {} : { offset: err.offset }) };
  if (err instanceof ConfigError) return { peer, code: "CONFIG", reason: `invalid VM_CONFIG: ${err.message}` };
  return { peer, code: "IO", reason: err instanceof Error ? err.message : String(err) };
}

/** Tells a source that authenticated but sent a bad start why, then hangs up. */
function refuse(socket: TLSSocket, reason: string): void {
  socket.on("error", () => undefined); // it may be gone already
  if (socket.writable) socket.end(JSON.stringify({ ok: false, error: reason }) + "\n");
  setTimeout(() => socket.destroy(), REFUSAL_LINGER_MS).unref();
}

/**
 * Waits on `at` for one incoming migration (or replication session) until
 * `timeoutMs`. A connection that fails the TLS-PSK handshake (another key,
 * bytes that are not TLS), does not start with a valid VM_CONFIG (not a
 * stream, a truncated or oversized record: the reader's limits, spec §2),
 * or sends nothing for `greetingTimeoutMs` is dropped and reported through
 * `onRejected`, and the wait goes on. The first connection whose VM_CONFIG
 * is accepted is the migration: the listener stops accepting then (a later
 * connection is refused), and any other connection still in its greeting
 * is dropped.
 */
export function acceptIncoming(
  at: Endpoint,
  key: Buffer,
  timeoutMs: number,
  onListening: (address: Endpoint) => void,
  options: AcceptOptions = {},
): Promise<Incoming> {
  const greetingMs = options.greetingTimeoutMs ?? GREETING_TIMEOUT_MS;
  /** Connections between handshake and VM_CONFIG, and how to cut each (why). */
  const greeting = new Map<TLSSocket, (code: string, reason: string) => void>();
  let dropped = 0;
  let last: RejectedPeer | undefined;
  const rejected = (r: RejectedPeer) => {
    dropped++;
    last = r;
    options.onRejected?.(r);
  };
  return new Promise<Incoming>((resolve, reject) => {
    let listener: SecureListener | undefined;
    let settled = false;
    const settle = (outcome: { incoming: Incoming } | { error: unknown }, others: [code: string, reason: string]) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      // Stop accepting; close() resolves only when the accepted connection ends, so do not wait.
      void listener?.close();
      for (const cut of greeting.values()) cut(...others);
      if ("incoming" in outcome) resolve(outcome.incoming);
      else reject(outcome.error);
    };
    const timer = setTimeout(() => {
      const bad = last ? ` (${dropped} connection${dropped === 1 ? "" : "s"} dropped, the last: ${describeRejected(last)})` : "";
      settle({ error: new ChannelError(formatEndpoint(at), "TIMEOUT", `no migration arrived within ${timeoutMs / 1000} s${bad}`) }, ["TIMEOUT", "the wait for a migration ended"]);
    }, timeoutMs);

    const greet = (socket: TLSSocket) => {
      const peer = remotePeer(socket);
      if (settled) {
        socket.destroy(); // its handshake ended after the migration was accepted
        return;
      }
      const reader = new StreamReader(socket);
      let cut: RejectedPeer | undefined;
      const stop = (code: string, reason: string) => {
        cut ??= { peer, code, reason };
        socket.destroy();
      };
      greeting.set(socket, stop);
      const deadline = setTimeout(() => stop("TIMEOUT", `no VM_CONFIG within ${greetingMs} ms of the handshake (${reader.offset} octets read)`), greetingMs);
      readConfig(reader, "migration").then(
        ({ config, source }) => {
          clearTimeout(deadline);
          greeting.delete(socket);
          if (cut || settled) {
            rejected(cut ?? { peer, code: "SUPERSEDED", reason: "another source's migration was accepted first" });
            if (!cut) refuse(socket, "another migration was accepted first");
            return;
          }
          const answer = (a: MigrationAnswer) =>
            new Promise<void>((done) => {
              if (socket.destroyed) return done();
              socket.write(JSON.stringify(a) + "\n", () => done());
            });
          settle({ incoming: { socket, reader, config, source, peer, answer } }, ["SUPERSEDED", "another source's migration was accepted first"]);
        },
        (err: unknown) => {
          clearTimeout(deadline);
          greeting.delete(socket);
          const r = cut ?? rejectionOf(peer, err);
          rejected(r);
          if (!cut) refuse(socket, r.reason);
        },
      );
    };

    listenSecure(at, key, greet, (err) => rejected({ peer: err.peer, code: err.code, reason: err.reason }), { handshakeTimeoutMs: greetingMs }).then(
      (l) => {
        listener = l;
        if (settled) void l.close();
        else onListening(l.address);
      },
      (err: unknown) => settle({ error: err }, ["LISTEN", "the listener failed"]),
    );
  });
}
