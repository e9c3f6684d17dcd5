/**
 * ENGINE_COMPAT (docs/specs/stream.md §3.14, optional): the sending engine
 * and what a receiving engine must match for the stream's engine state to
 * load (Engine.compatibility), before the first MEMORY_STREAM, so that a
 * receiver refuses an incompatible source before it takes any page. Body:
 * `u32 engine_id, u32 reserved`, then the descriptor, 1 to 256 octets of
 * printable ASCII. The comparison with the receiving engine is the
 * receiver's (machine-transfer.ts), not the reader's.
 */
import type { EngineId } from "../engine/engine.js";
import { StreamError, type StreamErrorCode, type StreamLocation } from "./errors.js";
import { defineLayout } from "./layout.js";
import { ENGINE_CODE, engineFromCode } from "./memory-header.js";
import { ENGINE_COMPAT_SUBHEADER_SIZE, MAX_ENGINE_COMPAT_DESCRIPTOR } from "./record-types.js";

export const engineCompatHeaderLayout = defineLayout("ENGINE_COMPAT sub-header", ENGINE_COMPAT_SUBHEADER_SIZE, {
  engineId: { offset: 0, type: "u32", meaning: "the sending engine: 1 emu, 2 kvm, 3 qemu; equals the machine header's" },
  reserved: { offset: 4, type: "u32", meaning: "zero", reserved: true },
});

/** An ENGINE_COMPAT record: the sending engine and its Engine.compatibility. */
export interface EngineCompat {
  readonly engineId: EngineId;
  /** Printable ASCII, 1 to 256 octets ("qemu 7.2.22 pc"). */
  readonly descriptor: string;
}

/** Why an ENGINE_COMPAT cannot be written or read: its StreamError code and detail. */
export interface EngineCompatProblem {
  readonly code: StreamErrorCode;
  readonly detail: string;
}

/** The first octet of `descriptor` outside printable ASCII (0x20-0x7E), as an index, or -1. */
function firstUnprintable(codes: ArrayLike<number>): number {
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i] ?? 0;
    if (c < 0x20 || c > 0x7e) return i;
  }
  return -1;
}

function lengthProblem(length: number): EngineCompatProblem | undefined {
  if (length < 1 || length > MAX_ENGINE_COMPAT_DESCRIPTOR) {
    return { code: "BAD_LENGTH", detail: `descriptor of ${length} octets, allowed 1 to ${MAX_ENGINE_COMPAT_DESCRIPTOR}` };
  }
  return undefined;
}

/** Why `compat` cannot be written in a stream whose machine is `machineEngine`, or undefined. */
export function engineCompatProblem(compat: EngineCompat, machineEngine: EngineId): EngineCompatProblem | undefined {
  if (compat.engineId !== machineEngine) {
    return { code: "BAD_FIELD", detail: `ENGINE_COMPAT of engine ${compat.engineId} in a stream for engine ${machineEngine}` };
  }
  if (typeof compat.descriptor !== "string") return { code: "BAD_FIELD", detail: "descriptor is not a string" };
  const codes = Array.from(compat.descriptor, (ch) => ch.codePointAt(0) ?? 0);
  const bad = firstUnprintable(codes);
  if (bad >= 0) return { code: "BAD_FIELD", detail: `descriptor character ${bad} (U+${(codes[bad] ?? 0).toString(16).toUpperCase().padStart(4, "0")}) is not printable ASCII` };
  return lengthProblem(codes.length);
}

/** The body of an ENGINE_COMPAT record (call engineCompatProblem() first). */
export function encodeEngineCompat(compat: EngineCompat): Uint8Array {
  const descriptor = Uint8Array.from(compat.descriptor, (ch) => ch.codePointAt(0) ?? 0);
  const body = new Uint8Array(ENGINE_COMPAT_SUBHEADER_SIZE + descriptor.length);
  engineCompatHeaderLayout.encodeInto(body, 0, { engineId: ENGINE_CODE[compat.engineId] });
  body.set(descriptor, ENGINE_COMPAT_SUBHEADER_SIZE);
  return body;
}

/** Decode a body whose length is within the type's bounds (9 to 264 octets). */
export function decodeEngineCompat(body: Uint8Array, where: StreamLocation): EngineCompat {
  const h = engineCompatHeaderLayout.decode(body);
  const reserved = engineCompatHeaderLayout.reservedViolation(body);
  if (reserved !== undefined) throw new StreamError("BAD_RESERVED", where, `${reserved} field is not zero`);
  const engineId = engineFromCode(h.engineId);
  if (engineId === undefined) throw new StreamError("BAD_FIELD", where, `unknown engine_id ${h.engineId} (1 emu, 2 kvm, 3 qemu)`);
  const octets = body.subarray(ENGINE_COMPAT_SUBHEADER_SIZE);
  const length = lengthProblem(octets.length);
  if (length !== undefined) throw new StreamError(length.code, where, length.detail);
  const bad = firstUnprintable(octets);
  if (bad >= 0) throw new StreamError("BAD_FIELD", where, `descriptor octet ${bad} (0x${(octets[bad] ?? 0).toString(16).padStart(2, "0")}) is not printable ASCII`);
  return { engineId, descriptor: String.fromCharCode(...octets) };
}
