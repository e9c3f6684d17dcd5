/**
 * Engine state records of the memory layer (docs/specs/stream.md §4.6,
 * §4.7): EMU_STATE carries the emu engine's RAM-less saveState() blob (v86's
 * CPU and devices); the kvm range is reserved and rejected.
 */
import type { EngineId } from "../engine/engine.js";
import { StreamError, type StreamLocation } from "./errors.js";
import { defineLayout } from "./layout.js";
import { ENGINE_CODE, engineFromCode, type MachineHeader } from "./memory-header.js";
import { BLOB_SUBHEADER_SIZE, MAX_BLOB_SIZE } from "./record-types.js";

/** EMU_STATE format_version values (spec §4.6). */
export const EMU_STATE_FORMAT = {
  /** v86 save_state() output (npm v86 0.5.x) with the RAM packer given no pages. */
  V86_SAVE_STATE: 1,
  /** f64 guest clock (ms, little-endian), then V86_SAVE_STATE: what the emu engine writes. */
  V86_SAVE_STATE_WITH_CLOCK: 2,
} as const;

const KNOWN_EMU_FORMATS: ReadonlySet<number> = new Set(Object.values(EMU_STATE_FORMAT));

export const engineStateHeaderLayout = defineLayout("engine state header", BLOB_SUBHEADER_SIZE, {
  engineId: { offset: 0, type: "u32", meaning: "engine of the state; equals the machine header's" },
  formatVersion: { offset: 4, type: "u32", meaning: "the engine's state format" },
});

/** An engine's state without RAM, as Engine.saveState() returns it. */
export interface EngineState {
  readonly engineId: EngineId;
  readonly formatVersion: number;
  readonly blob: Uint8Array;
}

/** Why `state` cannot be written for `machine`, or undefined. */
export function engineStateProblem(state: EngineState, machine: MachineHeader): string | undefined {
  if (state.engineId !== machine.engineId) return `state of engine ${state.engineId} in a stream for engine ${machine.engineId}`;
  if (state.engineId !== "emu") return `engine state of ${state.engineId} is not supported by this revision`;
  if (!KNOWN_EMU_FORMATS.has(state.formatVersion)) return `unknown emu state format_version ${state.formatVersion}`;
  if (state.blob.length < 1 || state.blob.length > MAX_BLOB_SIZE) return `state of ${state.blob.length} octets, allowed 1 to ${MAX_BLOB_SIZE}`;
  return undefined;
}

export function encodeEngineStateHead(state: EngineState): Uint8Array {
  return engineStateHeaderLayout.encode({ engineId: ENGINE_CODE[state.engineId], formatVersion: state.formatVersion });
}

/** Decode an EMU_STATE body (length already within bounds) for `machine`. */
export function decodeEmuState(body: Uint8Array, where: StreamLocation, machine: MachineHeader): EngineState {
  const h = engineStateHeaderLayout.decode(body);
  const engineId = engineFromCode(h.engineId);
  if (engineId !== "emu") throw new StreamError("BAD_FIELD", where, `engine_id ${h.engineId}, EMU_STATE holds emu (1) state`);
  if (machine.engineId !== "emu") {
    throw new StreamError("BAD_FIELD", where, `EMU_STATE in a stream for engine ${machine.engineId}`);
  }
  if (!KNOWN_EMU_FORMATS.has(h.formatVersion)) throw new StreamError("BAD_FIELD", where, `unknown format_version ${h.formatVersion}`);
  return { engineId, formatVersion: h.formatVersion, blob: body.subarray(BLOB_SUBHEADER_SIZE) };
}
