/**
 * Live migration between two colo hosts (docs/migration.md): the source
 * connects over an authenticated channel (TLS-PSK), sends VM_CONFIG,
 * ENGINE_COMPAT and the machine with pre-copy rounds; the destination
 * refuses at once (and the sending stops) when it cannot load the stream,
 * e.g. an incompatible engine. After the stream the two commit the
 * handover as xl does (handover.ts: ready, go, done), so that no failure
 * leaves two running copies. The destination drops a connection that does
 * not start a valid migration and waits on for a good one (acceptIncoming).
 */
import type { TLSSocket } from "node:tls";
import { ChannelError, connectSecure, formatEndpoint, listenSecure, remotePeer, type Endpoint, type SecureListener } from "../channel/secure-channel.js";
import type { Engine } from "../engine/engine.js";
import { machineHeader, StreamError, StreamReader, StreamWriter, teeSink, writableSink, type LinkTranslationLayers } from "../state/index.js";
import type { SendResult, TransferProgress } from "../state/machine-transfer.js";
import { readConfig, writeImage, type ConfigSource } from "./image-io.js";
import type { StreamCapture } from "./stream-capture.js";
import { ConfigError, type VmConfig } from "../config/index.js";
import { elapsedMs } from "../sys/clock.js";
import { AnswerLines, commitOut, type DestinationLines, type SourceCommitOptions, type SourceOutcome } from "./handover.js";
import type { ProbeOutcome } from "./check-probe.js";
import { PROBE_FIRST_OCTET } from "./check-protocol.js";

/** Default TCP port of `colo migrate-receive`. */
export const DEFAULT_MIGRATION_PORT = 8002;

/**
 * A migration connection that moves no octet this long while the stream is
 * sent is cut (each side): a silently cut link ends the migration instead
 * of holding a paused guest on the source, or a partial copy on the
 * destination, for good. The handover after the stream has its own bounds.
 */
export const STREAM_IDLE_TIMEOUT_MS = 15_000;

/** The destination's answer line (a refusal, or the commit's "done"): docs/migration.md, handover.ts. */
export type MigrationAnswer = { ok: true; resumeMs: number } | { ok: false; error: string };

export interface MigrateOutcome {
  send: SendResult;
  /** How the handover ended (handover.ts): the caller ends, resumes, or stays paused. */
  outcome: SourceOutcome;
  /** Source pause to the destination's answer: an upper bound of the guest's downtime. */
  downtimeMs: number;
}

export interface MigrateOutOptions {
  /** COLO_CAPTURE_DIR: a plaintext copy of the stream, opened once connected (openStreamCapture()). */
  openCapture?: () => StreamCapture | undefined;
  /** The handover's options (an arbiter to decide a lost answer; the test seam). */
  commit?: SourceCommitOptions;
  /** The VM's link translations, if it survived a failover (LINK_TRANSLATION): the destination keeps them. */
  linkLayers?: LinkTranslationLayers;
}

/**
 * Sends the VM to `to` and commits the handover (handover.ts). Throws
 * ChannelError (cannot connect, wrong key) or StreamError/Error (the
 * transfer failed before the go: the destination never runs it; the caller
 * resumes), or resolves with the handover's outcome.
 */
export async function migrateOut(
  engine: Engine,
  config: ConfigSource,
  to: Endpoint,
  key: Buffer,
  pause: () => Promise<void>,
  onProgress: (p: TransferProgress) => void,
  options: MigrateOutOptions = {},
): Promise<MigrateOutcome> {
  const socket = await connectSecure(to, key);
  const capture = options.openCapture?.();
  try {
    const wire = writableSink(socket);
    const writer = new StreamWriter(capture ? teeSink(wire, capture.sink) : wire, { machine: machineHeader(engine.id, engine.memoryBytes) });
    // A destination that refuses the stream early (e.g. its engine cannot load this one's state:
    // ENGINE_COMPAT, the first record after VM_CONFIG) answers at once: stop sending, the catch below says why.
    let refusal: string | undefined;
    const lines = new AnswerLines(socket, (error) => {
      refusal ??= error;
      socket.destroy();
    });
    let send: SendResult;
    // A link cut silently (no FIN, no RST) would block the sending for good, with the guest paused in the final phase.
    socket.setTimeout(STREAM_IDLE_TIMEOUT_MS, () => socket.destroy(new Error(`the connection made no progress for ${STREAM_IDLE_TIMEOUT_MS / 1000} s`)));
    try {
      send = await writeImage(engine, writer, config, { live: true, pause, onProgress }, options.linkLayers);
      socket.setTimeout(0);
    } catch (err) {
      // A destination that refuses the stream says why before it hangs up.
      if (refusal === undefined) await lines.next(1000);
      if (refusal !== undefined) throw new Error(`the destination refused the migration: ${refusal}`);
      throw err;
    }
    lines.onRefusal = undefined;
    const outcome = await commitOut(socket, lines, options.commit);
    return { send, outcome, downtimeMs: elapsedMs(send.pausedAt) };
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
  /** The handover's lines after the stream's END (handover.ts commitIn). */
  lines: DestinationLines;
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
  /**
   * Serves a `colo check` probe (check-probe.ts): a connection whose first
   * octet is `{` is handed over and counts neither as the migration nor as
   * dropped, unless the probe breaks its protocol. Without it, such a
   * connection is a bad stream like any other.
   */
  probe?: (socket: TLSSocket) => Promise<ProbeOutcome>;
  /** Each probe served (one log line). */
  onProbe?: (peer: string, summary: string) => void;
}

function rejectionOf(peer: string, err: unknown): RejectedPeer {
  if (err instanceof StreamError) return { peer, code: err.code, reason: err.message, ...(err.offset === undefined ? {} : { offset: err.offset }) };
  if (err instanceof ConfigError) return { peer, code: "CONFIG", reason: `invalid VM_CONFIG: ${err.message}` };
  return { peer, code: "IO", reason: err instanceof Error ? err.message : String(err) };
}

/** The first octet a connection sends, left unread for whoever reads it next; undefined if it ends first. */
function firstOctet(socket: TLSSocket): Promise<number | undefined> {
  return new Promise((resolve) => {
    const done = (octet: number | undefined) => {
      socket.off("readable", readable);
      socket.off("close", closed);
      resolve(octet);
    };
    const readable = () => {
      const chunk = socket.read() as Buffer | null;
      if (chunk === null || chunk.length === 0) return;
      socket.unshift(chunk);
      done(chunk[0]);
    };
    const closed = () => done(undefined);
    socket.on("readable", readable);
    socket.once("close", closed);
  });
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
      const probe = options.probe;
      const start = probe ? firstOctet(socket) : Promise.resolve(undefined);
      start.then((octet) => {
        if (probe === undefined || octet !== PROBE_FIRST_OCTET || cut) return readConfig(reader, "migration");
        clearTimeout(deadline);
        greeting.delete(socket);
        probe(socket).then(
          (o) => (o.ok ? options.onProbe?.(peer, o.summary) : rejected({ peer, code: o.code, reason: o.reason })),
          (err: unknown) => {
            socket.destroy();
            rejected({ peer, code: "PROBE", reason: `probe: ${err instanceof Error ? err.message : String(err)}` });
          },
        );
        return undefined;
      }).then(
        (got) => {
          if (got === undefined) return;
          const { config, source } = got;
          clearTimeout(deadline);
          greeting.delete(socket);
          if (cut || settled) {
            rejected(cut ?? { peer, code: "SUPERSEDED", reason: "another source's migration was accepted first" });
            if (!cut) refuse(socket, "another migration was accepted first");
            return;
          }
          const writeLine = (line: string) =>
            new Promise<void>((done) => {
              if (socket.destroyed) return done();
              socket.write(line + "\n", () => done());
            });
          const answer = (a: MigrationAnswer) => writeLine(JSON.stringify(a));
          const lines: DestinationLines = {
            read: (maxBytes) => reader.readLineAfterEnd(maxBytes),
            write: writeLine,
            cut: () => socket.destroy(),
          };
          settle({ incoming: { socket, reader, config, source, peer, answer, lines } }, ["SUPERSEDED", "another source's migration was accepted first"]);
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
