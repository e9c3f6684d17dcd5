/**
 * HEARTBEAT (docs/specs/stream.md §3.7): a COLO replication-control record
 * sent in both directions of the replication connection, so that each side
 * sees a record at least once per interval even when no checkpoint runs.
 * Body: `u64 sequence` (0, 1, 2, ... per stream; strictly increasing),
 * `u64 sender_time_ms` (the sender's monotonic clock, informational). Both
 * are kept below 2^53 so that they are exact JavaScript numbers.
 */
import { StreamError, type StreamLocation } from "./errors.js";
import { defineLayout } from "./layout.js";
import { HEARTBEAT_BODY } from "./record-types.js";

/** Both fields are below 2^53 (spec §3.7): exact as JavaScript numbers. */
export const MAX_HEARTBEAT_VALUE = Number.MAX_SAFE_INTEGER;

export const heartbeatLayout = defineLayout("HEARTBEAT body", HEARTBEAT_BODY, {
  sequence: { offset: 0, type: "u64", meaning: "0 for the stream's first heartbeat, then +1 per heartbeat; strictly increasing" },
  senderTimeMs: { offset: 8, type: "u64", meaning: "the sender's monotonic clock in milliseconds (informational)" },
});

/** A HEARTBEAT as the reader yields it and StreamWriter.writeHeartbeat() takes it. */
export interface Heartbeat {
  /** 0 for the stream's first heartbeat, then +1 per heartbeat; below 2^53. */
  readonly sequence: number;
  /** The sender's monotonic clock in milliseconds, below 2^53: for RTT and latency figures only. */
  readonly senderTimeMs: number;
}

/**
 * Why `heartbeat` cannot follow a heartbeat whose sequence was `previous`
 * (-1: none yet) in the same stream, or undefined.
 */
export function heartbeatProblem(heartbeat: Heartbeat, previous: number): string | undefined {
  const { sequence, senderTimeMs } = heartbeat;
  if (typeof sequence !== "number" || !Number.isSafeInteger(sequence) || sequence < 0) {
    return `sequence ${String(sequence)} is not an integer in 0..2^53-1`;
  }
  if (typeof senderTimeMs !== "number" || !Number.isSafeInteger(senderTimeMs) || senderTimeMs < 0) {
    return `sender_time_ms ${String(senderTimeMs)} is not an integer in 0..2^53-1`;
  }
  if (sequence <= previous) return `sequence ${sequence} after ${previous}: heartbeat sequences must increase`;
  return undefined;
}

export function encodeHeartbeat(heartbeat: Heartbeat): Uint8Array {
  return heartbeatLayout.encode({ sequence: BigInt(heartbeat.sequence), senderTimeMs: BigInt(heartbeat.senderTimeMs) });
}

/** Decode a body of exactly 16 octets that follows a heartbeat whose sequence was `previous` (-1: none yet). */
export function decodeHeartbeat(body: Uint8Array, where: StreamLocation, previous: number): Heartbeat {
  const h = heartbeatLayout.decode(body);
  const limit = BigInt(MAX_HEARTBEAT_VALUE);
  if (h.sequence > limit) throw new StreamError("BAD_FIELD", where, `sequence ${h.sequence} is 2^53 or more`);
  if (h.senderTimeMs > limit) throw new StreamError("BAD_FIELD", where, `sender_time_ms ${h.senderTimeMs} is 2^53 or more`);
  const heartbeat = { sequence: Number(h.sequence), senderTimeMs: Number(h.senderTimeMs) };
  if (heartbeat.sequence <= previous) {
    throw new StreamError("BAD_FIELD", where, `sequence ${heartbeat.sequence} after ${previous}: heartbeat sequences must increase`);
  }
  return heartbeat;
}
