/**
 * The primary's side of the `colo check` probe (check-protocol.ts): connect
 * to a waiting receiver over the TLS-PSK channel, send the config the
 * secondary would get, read its host's facts, time round trips (RTT) and
 * send a bounded run of octets the receiver times (bandwidth). Connection
 * failures are the channel's ChannelError (REFUSED, AUTH, TIMEOUT, IO);
 * a receiver that breaks the protocol, a ProbeError.
 */
import type { TLSSocket } from "node:tls";
import { connectSecure, formatEndpoint, type Endpoint } from "../channel/secure-channel.js";
import { monotonicMs } from "../sys/clock.js";
import {
  CHECK_PROBE_VERSION,
  MAX_FACTS_LINE_BYTES,
  MAX_PROBE_LINE_BYTES,
  MAX_SINK_BYTES,
  PROBE_LINE_TIMEOUT_MS,
  SINK_MAX_MS,
  parseEchoAnswer,
  parseFactsAnswer,
  parseSinkAnswer,
  type HostFacts,
} from "./check-protocol.js";
import type { ConfigSource } from "./image-io.js";
import { LineWire } from "./line-wire.js";

export class ProbeError extends Error {
  constructor(
    readonly peer: string,
    message: string,
  ) {
    super(message);
    this.name = "ProbeError";
  }
}

export interface RttFigures {
  samples: number;
  medianMs: number;
  minMs: number;
  maxMs: number;
}

export interface BandwidthFigures {
  /** Octets the receiver counted, and in how long (its clock). */
  bytes: number;
  ms: number;
  bytesPerSec: number;
  /** The receiver's time limit ended the sink before `maxBytes` came. */
  timeLimited: boolean;
}

export interface ProbeResult {
  peer: string;
  /** TCP connect + TLS-PSK handshake. */
  connectMs: number;
  facts: HostFacts;
  rtt: RttFigures;
  bandwidth: BandwidthFigures;
}

export interface ProbeClientOptions {
  /** Round trips for the RTT (default 10). */
  echoes?: number;
  /** The sink's size (default 32 MiB, at most MAX_SINK_BYTES). */
  sinkBytes?: number;
  /** Connect and handshake (default 5000 ms). */
  connectTimeoutMs?: number;
}

const CHUNK = 64 * 1024;

/** The median of a non-empty list. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

/**
 * Writes `total` octets in chunks, with backpressure, until done or `answered`
 * settles: the receiver answers once its time is up and reads no more, so a
 * wait for "drain" must end with the answer too.
 */
async function pour(socket: TLSSocket, total: number, answered: Promise<unknown>): Promise<void> {
  let done = false;
  const over = answered.then(
    () => (done = true),
    () => (done = true),
  );
  const chunk = Buffer.alloc(CHUNK, 0xa5);
  for (let sent = 0; sent < total && !done && !socket.destroyed; ) {
    const n = Math.min(CHUNK, total - sent);
    sent += n;
    if (!socket.write(n === CHUNK ? chunk : chunk.subarray(0, n))) {
      let go = () => {};
      const drained = new Promise<void>((resolve) => {
        go = () => resolve();
        socket.once("drain", go);
        socket.once("close", go);
      });
      await Promise.race([drained, over]);
      socket.off("drain", go);
      socket.off("close", go);
    }
  }
}

/** Probes the receiver at `to` for `config` (the text and path the secondary would get). */
export async function probeReceiver(to: Endpoint, key: Buffer, config: ConfigSource, opts: ProbeClientOptions = {}): Promise<ProbeResult> {
  const peer = formatEndpoint(to);
  const t0 = monotonicMs();
  const socket = await connectSecure(to, key, opts.connectTimeoutMs ?? 5_000);
  const connectMs = round3(monotonicMs() - t0);
  socket.on("error", () => socket.destroy());
  const wire = new LineWire(socket);
  const ask = async <T>(what: string, max: number, parse: (line: string) => T, timeoutMs = PROBE_LINE_TIMEOUT_MS): Promise<T> => {
    let line: string;
    try {
      line = await wire.readLine(max, timeoutMs, what);
    } catch (err) {
      throw new ProbeError(peer, `${peer}: ${(err as Error).message}`);
    }
    try {
      return parse(line);
    } catch (err) {
      throw new ProbeError(peer, `${peer}: ${(err as Error).message}`);
    }
  };
  try {
    socket.write(JSON.stringify({ op: "check", version: CHECK_PROBE_VERSION, config: config.text, configPath: config.path }) + "\n");
    // The receiver gathers its facts first (qemu: `--version` of its QEMU): more time than a line.
    const facts = await ask("the receiver's facts", MAX_FACTS_LINE_BYTES, parseFactsAnswer, 2 * PROBE_LINE_TIMEOUT_MS);
    const rtts: number[] = [];
    const echoes = Math.max(1, opts.echoes ?? 10);
    for (let seq = 0; seq < echoes; seq++) {
      const t = monotonicMs();
      socket.write(JSON.stringify({ op: "echo", seq }) + "\n");
      await ask("an echo", MAX_PROBE_LINE_BYTES, (line) => parseEchoAnswer(line, seq));
      rtts.push(monotonicMs() - t);
    }
    const maxBytes = Math.min(MAX_SINK_BYTES, Math.max(1, opts.sinkBytes ?? MAX_SINK_BYTES));
    socket.write(JSON.stringify({ op: "sink", maxBytes }) + "\n");
    const answer = ask("the sink's answer", MAX_PROBE_LINE_BYTES, parseSinkAnswer, SINK_MAX_MS + PROBE_LINE_TIMEOUT_MS);
    answer.catch(() => undefined); // awaited below, after the pouring
    await pour(socket, maxBytes, answer);
    const sink = await answer;
    return {
      peer,
      connectMs,
      facts,
      rtt: { samples: rtts.length, medianMs: round3(median(rtts)), minMs: round3(Math.min(...rtts)), maxMs: round3(Math.max(...rtts)) },
      bandwidth: { bytes: sink.bytes, ms: sink.ms, bytesPerSec: sink.ms > 0 ? Math.round((sink.bytes * 1000) / sink.ms) : 0, timeLimited: sink.bytes < maxBytes },
    };
  } finally {
    socket.destroy();
  }
}
