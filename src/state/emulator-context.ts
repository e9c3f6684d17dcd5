/**
 * EMULATOR_CONTEXT (docs/specs/stream.md §3.4): state of a device model
 * outside the engine (Xen keeps QEMU's state here). Reserved for the kvm
 * engine's colo VMM devices; an emu stream carries none.
 */
import { StreamError, type StreamLocation } from "./errors.js";
import { defineLayout } from "./layout.js";
import { BLOB_SUBHEADER_SIZE, MAX_BLOB_SIZE } from "./record-types.js";

/** emulator_id values (spec §3.4). */
export const EMULATOR_ID = {
  /** The colo VMM's device models of the kvm engine (virtio, serial): not KVM state. */
  COLO_VMM: 1,
} as const;

const KNOWN_EMULATORS: ReadonlySet<number> = new Set(Object.values(EMULATOR_ID));

/** index MUST be 0 in this revision: one instance per emulator. */
const ONLY_INDEX = 0;

export const emulatorHeaderLayout = defineLayout("emulator sub-header", BLOB_SUBHEADER_SIZE, {
  emulatorId: { offset: 0, type: "u32", meaning: "which device model (EMULATOR_ID)" },
  index: { offset: 4, type: "u32", meaning: "instance of the emulator: 0" },
});

export interface EmulatorContext {
  readonly emulatorId: number;
  readonly index: number;
  readonly context: Uint8Array;
}

/** Why `ctx` cannot be written, or undefined. */
export function emulatorContextProblem(ctx: EmulatorContext): string | undefined {
  if (!KNOWN_EMULATORS.has(ctx.emulatorId)) return `unknown emulator_id ${ctx.emulatorId}`;
  if (ctx.index !== ONLY_INDEX) return `index ${ctx.index}, must be ${ONLY_INDEX}`;
  if (ctx.context.length < 1 || ctx.context.length > MAX_BLOB_SIZE) return `context of ${ctx.context.length} octets, allowed 1 to ${MAX_BLOB_SIZE}`;
  return undefined;
}

export function encodeEmulatorContextHead(ctx: EmulatorContext): Uint8Array {
  return emulatorHeaderLayout.encode({ emulatorId: ctx.emulatorId, index: ctx.index });
}

export function decodeEmulatorContext(body: Uint8Array, where: StreamLocation): EmulatorContext {
  const h = emulatorHeaderLayout.decode(body);
  if (!KNOWN_EMULATORS.has(h.emulatorId)) throw new StreamError("BAD_FIELD", where, `unknown emulator_id ${h.emulatorId}`);
  if (h.index !== ONLY_INDEX) throw new StreamError("BAD_FIELD", where, `index ${h.index}, must be ${ONLY_INDEX}`);
  return { emulatorId: h.emulatorId, index: h.index, context: body.subarray(BLOB_SUBHEADER_SIZE) };
}
