/**
 * The receiver's side of the `colo check` probe (protocol: check-protocol.ts):
 * a connection to `migrate-receive`'s port that starts with `{` is answered
 * with this host's facts for the config it brings, echoes (RTT) and a sink
 * (bandwidth), then closed. A probe is not a migration: the receiver waits
 * on for its source. Every step is bounded (line sizes, MAX_ECHOES,
 * MAX_SINK_BYTES, SINK_MAX_MS, PROBE_LINE_TIMEOUT_MS, PROBE_MAX_MS); a
 * probe that breaks a bound or the protocol is dropped like a bad peer.
 */
import type { TLSSocket } from "node:tls";
import { elapsedMs, monotonicMs } from "../sys/clock.js";
import {
  MAX_ECHOES,
  MAX_PROBE_LINE_BYTES,
  MAX_PROBE_REQUEST_BYTES,
  PROBE_LINE_TIMEOUT_MS,
  PROBE_MAX_MS,
  SINK_MAX_MS,
  parseProbeLine,
  parseProbeRequest,
  type HostFacts,
  type ProbeRequest,
  type ReceiverRole,
} from "./check-protocol.js";
import { gatherHostFacts } from "./check-host-facts.js";
import { LineWire, WireError } from "./line-wire.js";

/** How a probe ended: served (one log line), or dropped (a RejectedPeer's code and reason). */
export type ProbeOutcome = { ok: true; summary: string } | { ok: false; code: string; reason: string };

export interface ProbeOptions {
  /** How the receiver was started (its --colo, --arbiter, --lease). */
  receiver: ReceiverRole;
  /** The facts for a request (default gatherHostFacts: tests give their own). */
  facts?: (req: ProbeRequest, receiver: ReceiverRole) => Promise<HostFacts>;
  /** Default PROBE_LINE_TIMEOUT_MS. */
  lineTimeoutMs?: number;
  /** Default PROBE_MAX_MS. */
  maxMs?: number;
  /** Default SINK_MAX_MS (tests: a link slower than the sink's size). */
  sinkMaxMs?: number;
}

/** How a probe that broke the protocol was told (then it is cut). */
const REFUSAL_LINGER_MS = 1_000;

function write(socket: TLSSocket, value: unknown): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed || !socket.writable) return resolve();
    socket.write(JSON.stringify(value) + "\n", () => resolve());
  });
}

const mib = (b: number) => (b / 2 ** 20).toFixed(1);

/** Serves one probe on an authenticated `socket` whose first octet is `{`; the socket is this function's from now on. */
export async function serveProbe(socket: TLSSocket, opts: ProbeOptions): Promise<ProbeOutcome> {
  const lineMs = opts.lineTimeoutMs ?? PROBE_LINE_TIMEOUT_MS;
  const started = monotonicMs();
  socket.on("error", () => socket.destroy());
  const wire = new LineWire(socket);
  let cutReason: string | undefined;
  const cut = setTimeout(() => {
    cutReason = `the probe was still running ${opts.maxMs ?? PROBE_MAX_MS} ms after its handshake`;
    socket.destroy();
  }, opts.maxMs ?? PROBE_MAX_MS);
  let echoes = 0;
  let sink: { bytes: number; ms: number } | undefined;
  let vm = "?";
  try {
    const req = parseProbeRequest(await wire.readLine(MAX_PROBE_REQUEST_BYTES, lineMs, "the probe request"));
    const facts = await (opts.facts ?? gatherHostFacts)(req, opts.receiver);
    vm = facts.config.ok ? `${facts.config.name} (${facts.config.engine})` : "an invalid config";
    await write(socket, { ok: true, facts });
    for (;;) {
      let line: string;
      try {
        line = await wire.readLine(MAX_PROBE_LINE_BYTES, lineMs, "a probe line");
      } catch (err) {
        // The primary hangs up once it has its figures: a probe that ends between lines is done.
        if (err instanceof WireError && err.code === "ENDED") break;
        throw err;
      }
      const step = parseProbeLine(line);
      if (step.op === "done") break;
      if (step.op === "echo") {
        if (++echoes > MAX_ECHOES) throw new Error(`more than ${MAX_ECHOES} echoes`);
        await write(socket, { echo: step.seq });
        continue;
      }
      if (sink) throw new Error("a second sink");
      const got = await wire.drain(step.maxBytes, opts.sinkMaxMs ?? SINK_MAX_MS);
      sink = { bytes: got.bytes, ms: Math.round(got.ms * 1000) / 1000 };
      await write(socket, { sink });
      break; // the sink is the last step; what the primary still sends is not read
    }
  } catch (err) {
    const reason = cutReason ?? (err instanceof Error ? err.message : String(err));
    if (socket.writable && !cutReason) socket.end(JSON.stringify({ ok: false, error: reason }) + "\n");
    setTimeout(() => socket.destroy(), REFUSAL_LINGER_MS).unref();
    return { ok: false, code: cutReason ? "TIMEOUT" : err instanceof WireError ? err.code : "PROBE", reason: `probe: ${reason}` };
  } finally {
    clearTimeout(cut);
  }
  if (cutReason) return { ok: false, code: "TIMEOUT", reason: `probe: ${cutReason}` };
  socket.end();
  setTimeout(() => socket.destroy(), REFUSAL_LINGER_MS).unref();
  const sunk = sink ? `, ${mib(sink.bytes)} MiB in ${sink.ms.toFixed(0)} ms` : "";
  return { ok: true, summary: `check probe for ${vm}: ${echoes} echoes${sunk}, ${elapsedMs(started)} ms` };
}
