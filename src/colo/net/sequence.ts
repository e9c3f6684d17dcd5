/**
 * TCP sequence-number arithmetic: RFC 1982 serial numbers, 32 bits (add,
 * signed distance, order), and the sequence space a segment occupies.
 */
import type { TcpSegment } from "./packet-types.js";

export const SEQ_MODULUS = 2 ** 32;

/** a - b as a signed 32-bit distance. */
export function seqDiff(a: number, b: number): number {
  return (a - b) | 0;
}

/** a + n mod 2^32. */
export function seqAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}

/** a >= b in serial-number order. */
export function seqGte(a: number, b: number): boolean {
  return seqDiff(a, b) >= 0;
}

/** a > b in serial-number order. */
export function seqGt(a: number, b: number): boolean {
  return seqDiff(a, b) > 0;
}

/** Sequence units a TCP segment occupies: SYN and FIN count one each (RFC 793 §3.3). */
export function segmentLength(tcp: TcpSegment): number {
  return tcp.payload.length + (tcp.flags.syn ? 1 : 0) + (tcp.flags.fin ? 1 : 0);
}
