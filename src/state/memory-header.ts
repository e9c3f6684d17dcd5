/**
 * The memory layer's headers (docs/specs/stream.md §4.1, §4.2): the image
 * header (Xen's, with our ident "COLM") and the machine header (Xen's domain
 * header: what a receiver needs to refuse a stream it cannot hold).
 */
import { PAGE_SHIFT, PAGE_SIZE, type EngineId } from "../engine/engine.js";
import { describeOctets, StreamError, type StreamLocation } from "./errors.js";
import { asciiOctets, defineLayout, octetsEqual } from "./layout.js";

export const MEMORY_MARKER = 0xffff_ffff_ffff_ffffn;
export const MEMORY_IDENT = asciiOctets("COLM");
export const MEMORY_VERSION = 1;
/** options bit 0: endianness; MUST be 0. */
const OPTION_BIG_ENDIAN = 0x1;

/** engine_id values (spec §4.2). */
export const ENGINE_CODE: Readonly<Record<EngineId, number>> = { emu: 1, kvm: 2, qemu: 3 };

/** memory_bytes ≤ 2^44, so every pfn fits in 32 bits (spec §4.2). */
export const MAX_MEMORY_BYTES = 2 ** 44;
export const MAX_VCPUS = 4096;
/** v86 emulates one CPU. */
const EMU_VCPUS = 1;

export const memoryImageHeaderLayout = defineLayout("memory image header", 24, {
  marker: { offset: 0, type: "u64", meaning: "0xFFFFFFFFFFFFFFFF (Xen's marker)" },
  ident: { offset: 8, type: { octets: 4 }, meaning: 'ASCII "COLM"' },
  version: { offset: 12, type: "u32", meaning: "version of the memory layer: 1" },
  options: { offset: 16, type: "u16", meaning: "bit 0 endianness (0); bits 1-15 reserved" },
  reserved: { offset: 18, type: { octets: 6 }, meaning: "zero", reserved: true },
});

export const machineHeaderLayout = defineLayout("machine header", 16, {
  engineId: { offset: 0, type: "u32", meaning: "1 emu, 2 kvm, 3 qemu" },
  pageShift: { offset: 4, type: "u8", meaning: "12" },
  reserved: { offset: 5, type: "u8", meaning: "zero", reserved: true },
  vcpuCount: { offset: 6, type: "u16", meaning: "1..4096; 1 for emu" },
  memoryBytes: { offset: 8, type: "u64", meaning: "guest RAM in octets, page-aligned, ≤ 2^44" },
});

/** Both headers, as they follow the first MEMORY_STREAM record. */
export const MEMORY_HEADERS_SIZE = memoryImageHeaderLayout.size + machineHeaderLayout.size;

/** The machine a stream describes (the machine header, validated). */
export interface MachineHeader {
  readonly engineId: EngineId;
  readonly memoryBytes: number;
  readonly vcpuCount: number;
  /** memoryBytes / PAGE_SIZE. */
  readonly pageCount: number;
}

/** What the receiver will load into; every given field must match the machine header. */
export interface MachineExpectation {
  engineId?: EngineId;
  memoryBytes?: number;
  vcpuCount?: number;
}

export function engineFromCode(code: number): EngineId | undefined {
  for (const [id, value] of Object.entries(ENGINE_CODE)) if (value === code) return id as EngineId;
  return undefined;
}

/** Why a machine description is invalid, or undefined when it is valid. */
function machineProblem(engineId: EngineId, memoryBytes: number, vcpuCount: number): string | undefined {
  if (!Number.isSafeInteger(memoryBytes) || memoryBytes <= 0 || memoryBytes % PAGE_SIZE !== 0) {
    return `memory_bytes ${memoryBytes} is not a positive multiple of ${PAGE_SIZE}`;
  }
  if (memoryBytes > MAX_MEMORY_BYTES) return `memory_bytes ${memoryBytes} exceeds the maximum 2^44`;
  if (!Number.isInteger(vcpuCount) || vcpuCount < 1 || vcpuCount > MAX_VCPUS) return `vcpu_count ${vcpuCount} is not in 1..${MAX_VCPUS}`;
  if (engineId === "emu" && vcpuCount !== EMU_VCPUS) return `vcpu_count ${vcpuCount}: the emu engine has exactly ${EMU_VCPUS} vCPU`;
  return undefined;
}

/** Build a validated machine header (writer side); throws StreamError BAD_FIELD. */
export function machineHeader(engineId: EngineId, memoryBytes: number, vcpuCount = 1): MachineHeader {
  const problem = machineProblem(engineId, memoryBytes, vcpuCount);
  if (problem !== undefined) throw new StreamError("BAD_FIELD", undefined, `machine header: ${problem}`);
  return { engineId, memoryBytes, vcpuCount, pageCount: memoryBytes / PAGE_SIZE };
}

export function encodeMemoryHeaders(machine: MachineHeader): Uint8Array {
  const out = new Uint8Array(MEMORY_HEADERS_SIZE);
  memoryImageHeaderLayout.encodeInto(out, 0, { marker: MEMORY_MARKER, ident: MEMORY_IDENT, version: MEMORY_VERSION, options: 0 });
  machineHeaderLayout.encodeInto(out, memoryImageHeaderLayout.size, {
    engineId: ENGINE_CODE[machine.engineId],
    pageShift: PAGE_SHIFT,
    vcpuCount: machine.vcpuCount,
    memoryBytes: BigInt(machine.memoryBytes),
  });
  return out;
}

/** Validate the memory image header (memoryImageHeaderLayout.size octets). */
export function decodeMemoryImageHeader(bytes: Uint8Array, offset: number): void {
  const where: StreamLocation = { offset, what: "memory image header" };
  const h = memoryImageHeaderLayout.decode(bytes);
  if (h.marker !== MEMORY_MARKER) {
    throw new StreamError("BAD_MAGIC", where, `marker is 0x${h.marker.toString(16)}, expected 0xffffffffffffffff`);
  }
  if (!octetsEqual(h.ident, MEMORY_IDENT)) {
    const xen = octetsEqual(h.ident, asciiOctets("XENF")) ? " (a Xen libxc image)" : "";
    throw new StreamError("BAD_MAGIC", where, `ident is ${describeOctets(h.ident)}${xen}, expected "COLM"`);
  }
  if (h.version !== MEMORY_VERSION) {
    throw new StreamError("BAD_VERSION", where, `version ${h.version}, this reader implements version ${MEMORY_VERSION}`);
  }
  if ((h.options & OPTION_BIG_ENDIAN) !== 0) throw new StreamError("BAD_RESERVED", where, "big-endian streams are not supported");
  if (h.options !== 0) throw new StreamError("BAD_RESERVED", where, `reserved option bits set: 0x${h.options.toString(16)}`);
  const reserved = memoryImageHeaderLayout.reservedViolation(bytes);
  if (reserved !== undefined) throw new StreamError("BAD_RESERVED", where, `${reserved} is not zero`);
}

/** Validate and return the machine header (machineHeaderLayout.size octets). */
export function decodeMachineHeader(bytes: Uint8Array, offset: number): MachineHeader {
  const where: StreamLocation = { offset, what: "machine header" };
  const h = machineHeaderLayout.decode(bytes);
  const reserved = machineHeaderLayout.reservedViolation(bytes);
  if (reserved !== undefined) throw new StreamError("BAD_RESERVED", where, `${reserved} is not zero`);
  const engineId = engineFromCode(h.engineId);
  if (engineId === undefined) throw new StreamError("BAD_FIELD", where, `unknown engine_id ${h.engineId} (1 emu, 2 kvm, 3 qemu)`);
  if (h.pageShift !== PAGE_SHIFT) throw new StreamError("BAD_FIELD", where, `page_shift ${h.pageShift}, expected ${PAGE_SHIFT}`);
  if (h.memoryBytes > BigInt(MAX_MEMORY_BYTES)) {
    throw new StreamError("BAD_FIELD", where, `memory_bytes ${h.memoryBytes} exceeds the maximum 2^44`);
  }
  const memoryBytes = Number(h.memoryBytes);
  const problem = machineProblem(engineId, memoryBytes, h.vcpuCount);
  if (problem !== undefined) throw new StreamError("BAD_FIELD", where, problem);
  return { engineId, memoryBytes, vcpuCount: h.vcpuCount, pageCount: memoryBytes / PAGE_SIZE };
}

/** Reject a machine header that differs from what the receiver will load into. */
export function checkMachineExpectation(machine: MachineHeader, expect: MachineExpectation | undefined, where: StreamLocation): void {
  if (expect === undefined) return;
  if (expect.engineId !== undefined && expect.engineId !== machine.engineId) {
    throw new StreamError("MISMATCH", where, `the stream is for engine ${machine.engineId}, this VM runs on ${expect.engineId}: the state of one engine cannot be loaded by the other`);
  }
  if (expect.memoryBytes !== undefined && expect.memoryBytes !== machine.memoryBytes) {
    throw new StreamError("MISMATCH", where, `the stream has ${machine.memoryBytes} octets of memory, this VM has ${expect.memoryBytes}`);
  }
  if (expect.vcpuCount !== undefined && expect.vcpuCount !== machine.vcpuCount) {
    throw new StreamError("MISMATCH", where, `the stream has ${machine.vcpuCount} vCPUs, this VM has ${expect.vcpuCount}`);
  }
}
