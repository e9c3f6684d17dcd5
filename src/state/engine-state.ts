/**
 * Engine state records of the memory layer (docs/specs/stream.md §4.6,
 * §4.7, §4.9): EMU_STATE carries the emu engine's RAM-less saveState() blob
 * (v86's CPU and devices), QEMU_STATE the qemu engine's (QEMU's device state
 * behind the engine's header); the kvm range is reserved and rejected. Each
 * engine has its own record; a state record of another engine than the
 * machine header's is rejected.
 */
import type { EngineId } from "../engine/engine.js";
import { StreamError, type StreamLocation } from "./errors.js";
import { defineLayout } from "./layout.js";
import { ENGINE_CODE, engineFromCode, type MachineHeader } from "./memory-header.js";
import { BLOB_SUBHEADER_SIZE, MAX_BLOB_SIZE, MEMORY_RECORD } from "./record-types.js";

/** EMU_STATE format_version values (spec §4.6). */
export const EMU_STATE_FORMAT = {
  /** v86 save_state() output (npm v86 0.5.x) with the RAM packer given no pages. */
  V86_SAVE_STATE: 1,
  /** f64 guest clock (ms, little-endian), then V86_SAVE_STATE: what the emu engine writes. */
  V86_SAVE_STATE_WITH_CLOCK: 2,
} as const;

/** QEMU_STATE format_version values (spec §4.9). */
export const QEMU_STATE_FORMAT = {
  /**
   * "CQST", u32 header length, JSON {qemuVersion, machine, memoryBytes}, then
   * QEMU's xen-save-devices-state output: what the qemu engine writes
   * (src/engine/qemu/qemu-state.ts, QEMU_STATE_FORMAT_VERSION).
   */
  CQST_DEVICE_STATE: 1,
} as const;

/** Per engine: its state record and the format versions it may carry (kvm: none in this revision). */
const STATE_RECORDS: Readonly<Record<EngineId, { readonly type: number; readonly name: string; readonly formats: ReadonlySet<number> } | undefined>> = {
  emu: { type: MEMORY_RECORD.EMU_STATE, name: "EMU_STATE", formats: new Set(Object.values(EMU_STATE_FORMAT)) },
  qemu: { type: MEMORY_RECORD.QEMU_STATE, name: "QEMU_STATE", formats: new Set(Object.values(QEMU_STATE_FORMAT)) },
  kvm: undefined,
};

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

/** The memory record type that carries `engineId`'s state, or undefined (kvm: reserved, not supported). */
export function engineStateRecordType(engineId: EngineId): number | undefined {
  return STATE_RECORDS[engineId]?.type;
}

/** Why `state` cannot be written for `machine`, or undefined. */
export function engineStateProblem(state: EngineState, machine: MachineHeader): string | undefined {
  if (state.engineId !== machine.engineId) return `state of engine ${state.engineId} in a stream for engine ${machine.engineId}`;
  const record = STATE_RECORDS[state.engineId];
  if (record === undefined) return `engine state of ${state.engineId} is not supported by this revision`;
  if (!record.formats.has(state.formatVersion)) return `unknown ${state.engineId} state format_version ${state.formatVersion}`;
  if (state.blob.length < 1 || state.blob.length > MAX_BLOB_SIZE) return `state of ${state.blob.length} octets, allowed 1 to ${MAX_BLOB_SIZE}`;
  return undefined;
}

export function encodeEngineStateHead(state: EngineState): Uint8Array {
  return engineStateHeaderLayout.encode({ engineId: ENGINE_CODE[state.engineId], formatVersion: state.formatVersion });
}

/** Decode the body of `engineId`'s state record (length already within bounds) for `machine`. */
function decodeStateOf(engineId: "emu" | "qemu", body: Uint8Array, where: StreamLocation, machine: MachineHeader): EngineState {
  const record = STATE_RECORDS[engineId];
  if (record === undefined) throw new StreamError("INTERNAL", where, `no state record for engine ${engineId}`);
  const h = engineStateHeaderLayout.decode(body);
  if (engineFromCode(h.engineId) !== engineId) {
    throw new StreamError("BAD_FIELD", where, `engine_id ${h.engineId}, ${record.name} holds ${engineId} (${ENGINE_CODE[engineId]}) state`);
  }
  if (machine.engineId !== engineId) {
    const theirs = STATE_RECORDS[machine.engineId];
    const rule = theirs === undefined ? "" : ` (whose engine state is ${theirs.name})`;
    throw new StreamError("BAD_FIELD", where, `${record.name} in a stream for engine ${machine.engineId}${rule}`);
  }
  if (!record.formats.has(h.formatVersion)) throw new StreamError("BAD_FIELD", where, `unknown format_version ${h.formatVersion}`);
  return { engineId, formatVersion: h.formatVersion, blob: body.subarray(BLOB_SUBHEADER_SIZE) };
}

/** Decode an EMU_STATE body (length already within bounds) for `machine`. */
export function decodeEmuState(body: Uint8Array, where: StreamLocation, machine: MachineHeader): EngineState {
  return decodeStateOf("emu", body, where, machine);
}

/** Decode a QEMU_STATE body (length already within bounds) for `machine`. */
export function decodeQemuState(body: Uint8Array, where: StreamLocation, machine: MachineHeader): EngineState {
  return decodeStateOf("qemu", body, where, machine);
}
