/**
 * Record framing shared by both layers (docs/specs/stream.md §2, Xen
 * migration stream v2): `u32 type, u32 body_length, body, zero padding to a
 * multiple of 8 octets`.
 */
import { defineLayout } from "./layout.js";

/** Every record and header is a multiple of this many octets (spec §1). */
export const RECORD_ALIGNMENT = 8;

/** Upper bound of any record body, known or not (spec §2). */
export const MAX_RECORD_BODY = 64 * 2 ** 20;

/** Bit 31 of a record type: set for optional records a reader may skip (spec §2). */
export const OPTIONAL_RECORD_BIT = 0x8000_0000;

export const recordHeaderLayout = defineLayout("record header", 8, {
  type: { offset: 0, type: "u32", meaning: "record type; bit 31 set: optional" },
  bodyLength: { offset: 4, type: "u32", meaning: "octets of body, without header and padding" },
});

export const RECORD_HEADER_SIZE = recordHeaderLayout.size;

export function isOptionalType(type: number): boolean {
  return (type & OPTIONAL_RECORD_BIT) !== 0;
}

/** Octets of zero padding after a body of `bodyLength` octets. */
export function paddingLength(bodyLength: number): number {
  return (RECORD_ALIGNMENT - (bodyLength % RECORD_ALIGNMENT)) % RECORD_ALIGNMENT;
}

/** Octets a record of `bodyLength` occupies in the stream, header and padding included. */
export function recordSize(bodyLength: number): number {
  return RECORD_HEADER_SIZE + bodyLength + paddingLength(bodyLength);
}

const ZERO_PADDING = new Uint8Array(RECORD_ALIGNMENT);

/** A fresh zero-filled padding chunk for a body of `bodyLength` (empty when none is needed). */
export function paddingFor(bodyLength: number): Uint8Array {
  return ZERO_PADDING.slice(0, paddingLength(bodyLength));
}

export function encodeRecordHeader(type: number, bodyLength: number): Uint8Array {
  return recordHeaderLayout.encode({ type, bodyLength });
}
