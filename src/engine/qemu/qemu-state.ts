/**
 * The qemu engine's state blob (QEMU_STATE, docs/specs/stream.md): a header
 * naming what produced it — QEMU's version, the machine type, the RAM size —
 * then QEMU's device state as `xen-save-devices-state` wrote it (QEMU's own
 * migration format, guest RAM left out). A state is loaded only by the same
 * QEMU version and machine: QEMU's format is only as stable as its
 * versioned machine types, and we do not bet a replica on that.
 *
 * Layout: "CQST" (4 octets), u32 LE header length N, N octets of UTF-8
 * JSON {qemuVersion, machine, memoryBytes}, then the device state.
 */

import { EngineError } from "../errors.js";

export const QEMU_STATE_FORMAT_VERSION = 1;
const MAGIC = Buffer.from("CQST", "latin1");
const MAX_HEADER = 4096;

export interface QemuStateHeader {
  /** "7.2.22" */
  qemuVersion: string;
  /** QEMU machine type ("pc"). */
  machine: string;
  memoryBytes: number;
}

export function encodeQemuState(header: QemuStateHeader, devices: Uint8Array): Uint8Array {
  const json = Buffer.from(JSON.stringify(header), "utf8");
  const len = Buffer.alloc(4);
  len.writeUInt32LE(json.length);
  return Buffer.concat([MAGIC, len, json, devices]);
}

export function decodeQemuState(blob: Uint8Array, what: string): { header: QemuStateHeader; devices: Uint8Array } {
  const bad = (why: string): EngineError => new EngineError("qemu", "BAD_STATE", `${what}: ${why}`);
  const b = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
  if (b.length < 8 || !b.subarray(0, 4).equals(MAGIC)) throw bad("not a qemu engine state (no CQST magic)");
  const n = b.readUInt32LE(4);
  if (n > MAX_HEADER || 8 + n > b.length) throw bad(`header length ${n} does not fit`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(b.subarray(8, 8 + n).toString("utf8"));
  } catch {
    throw bad("header is not JSON");
  }
  if (typeof parsed !== "object" || parsed === null) throw bad("header is not an object");
  const h = parsed as Record<string, unknown>;
  if (typeof h.qemuVersion !== "string" || typeof h.machine !== "string" || typeof h.memoryBytes !== "number" || !Number.isSafeInteger(h.memoryBytes)) {
    throw bad("header lacks qemuVersion, machine or memoryBytes");
  }
  const devices = blob.subarray(8 + n);
  if (devices.length === 0) throw bad("no device state after the header");
  return { header: { qemuVersion: h.qemuVersion, machine: h.machine, memoryBytes: h.memoryBytes }, devices };
}
