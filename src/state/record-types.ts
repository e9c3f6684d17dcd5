/**
 * The record type registry of docs/specs/stream.md §3.2 and §4.3: numbers,
 * names, and the body bounds a reader checks before it allocates a body.
 * Numbers shared with Xen keep Xen's values (libxl_sr_stream_format.h,
 * xc_sr_stream_format.h).
 */
import { PAGE_SIZE } from "../engine/engine.js";
import { hex32 } from "./errors.js";
import { MAX_RECORD_BODY } from "./framing.js";
import {
  CHECKPOINT_REQUEST_BODY,
  DISK_CHECKPOINT_BODY,
  DISK_INFO_SUBHEADER,
  DISK_WANT_SUBHEADER,
  DISK_WRITE_SUBHEADER,
  MAX_DISK_CHUNKS,
  MAX_DISK_WRITE_DATA,
  MAX_NET_FRAME,
  MIN_NET_FRAME,
  NET_FRAME_SUBHEADER,
  REPLICATION_MODE_BODY,
  SHA256_OCTETS,
} from "./colo-records.js";
import { MAX_LINK_TRANSLATION_BODY, MIN_LINK_TRANSLATION_BODY } from "./link-translation-record.js";
import { DISK_LOG_SUBHEADER, DISK_PLAN_SUBHEADER, DISK_SYNCED_BODY, MAX_DISK_LOG_BODY, MAX_DISK_PLAN_BODY } from "./disk-log-records.js";

export type Layer = "toolstack" | "memory";

/** Toolstack-layer types (spec §3.2; Xen libxl's REC_TYPE_*). */
export const TOOLSTACK_RECORD = {
  END: 0x0000_0000,
  /** Xen: LIBXC_CONTEXT. */
  MEMORY_STREAM: 0x0000_0001,
  EMULATOR_CONTEXT: 0x0000_0003,
  CHECKPOINT_END: 0x0000_0004,
  CHECKPOINT_STATE: 0x0000_0005,
  /** First of the COLO replication-control range 0x100-0x1FF (spec §3.2, §3.7). */
  HEARTBEAT: 0x0000_0100,
  /** COLO compare mode and disk replication (spec §3.8-§3.13; colo-records.ts). */
  REPLICATION_MODE: 0x0000_0101,
  NET_FRAME: 0x0000_0102,
  DISK_WRITE: 0x0000_0103,
  DISK_CHECKPOINT: 0x0000_0104,
  DISK_INFO: 0x0000_0105,
  DISK_WANT: 0x0000_0106,
  CHECKPOINT_REQUEST: 0x0000_0107,
  /** Optional: a survivor's link translations, carried to its new secondary (spec §3.15); its shadow 0x108 is never assigned. */
  LINK_TRANSLATION: 0x8000_0108,
  /** Optional: the chunks to copy, proven by the images' activity logs, instead of a disk's DISK_INFO (spec §3.16); shadow 0x109 never assigned. */
  DISK_PLAN: 0x8000_0109,
  /** Optional, back channel, its first record: the new session's lineage and the secondary's activity logs (spec §3.17); shadow 0x10A never assigned. */
  DISK_LOG: 0x8000_010a,
  /** Optional, back channel: the secondary's images hold a checkpoint durably (spec §3.18); shadow 0x10B never assigned. */
  DISK_SYNCED: 0x8000_010b,
  /** First of the toolstack metadata range 0x200-0x2FF (spec §3.2, §3.6). */
  VM_CONFIG: 0x0000_0200,
  /** Optional: the sending engine and what a receiving engine must match (spec §3.14); its shadow 0x201 is never assigned. */
  ENGINE_COMPAT: 0x8000_0201,
} as const;

/** Memory-layer types (spec §4.3; Xen libxc's REC_TYPE_* where shared). */
export const MEMORY_RECORD = {
  END: 0x0000_0000,
  PAGE_DATA: 0x0000_0001,
  CHECKPOINT: 0x0000_000e,
  CHECKPOINT_DIRTY_PFN_LIST: 0x0000_000f,
  EMU_STATE: 0x0000_0100,
  /** The qemu engine's state (spec §4.9); 0x141-0x14F are reserved for qemu. */
  QEMU_STATE: 0x0000_0140,
  PRECOPY_ROUND: 0x8000_0200,
} as const;

/** Reserved kvm engine state types (spec §4.7): known, rejected as unsupported. */
export const KVM_RECORD = {
  KVM_VCPU_REGS: 0x110,
  KVM_VCPU_SREGS: 0x111,
  KVM_VCPU_FPU: 0x112,
  KVM_VCPU_XSAVE: 0x113,
  KVM_VCPU_XCRS: 0x114,
  KVM_VCPU_MSRS: 0x115,
  KVM_VCPU_LAPIC: 0x116,
  KVM_VCPU_EVENTS: 0x117,
  KVM_VCPU_MP_STATE: 0x118,
  KVM_VCPU_DEBUGREGS: 0x119,
  KVM_IRQCHIP: 0x130,
  KVM_PIT2: 0x131,
  KVM_CLOCK: 0x132,
} as const;

/** The whole range reserved for kvm state (spec §4.7). */
export const KVM_RECORD_RANGE = { first: 0x110, last: 0x13f } as const;

/** PAGE_DATA: pages per record (spec §4.4; Xen's MAX_BATCH_SIZE). */
export const MAX_PAGES_PER_RECORD = 1024;
/** PAGE_DATA fixed part: count and reserved. */
export const PAGE_DATA_HEADER_SIZE = 8;
/** Octets per pfn entry (u64) in PAGE_DATA and CHECKPOINT_DIRTY_PFN_LIST. */
export const PFN_ENTRY_SIZE = 8;
export const MAX_PAGE_DATA_BODY = PAGE_DATA_HEADER_SIZE + MAX_PAGES_PER_RECORD * (PFN_ENTRY_SIZE + PAGE_SIZE);
/** CHECKPOINT_DIRTY_PFN_LIST: entries per record (spec §4.5). */
export const MAX_DIRTY_PFNS_PER_RECORD = 65536;
/** EMU_STATE, QEMU_STATE and EMULATOR_CONTEXT: sub-header (two u32). */
export const BLOB_SUBHEADER_SIZE = 8;
/** EMU_STATE and QEMU_STATE state blob, EMULATOR_CONTEXT context: at most 32 MiB (spec §3.4, §4.6, §4.9). */
export const MAX_BLOB_SIZE = 32 * 2 ** 20;
export const CHECKPOINT_STATE_BODY = 4;
export const PRECOPY_ROUND_BODY = 16;
/** HEARTBEAT: u64 sequence, u64 sender_time_ms (spec §3.7). */
export const HEARTBEAT_BODY = 16;
/** VM_CONFIG fixed part: format and path_length (spec §3.6). */
export const VM_CONFIG_SUBHEADER_SIZE = 8;
/** VM_CONFIG path: 1 to 4096 octets of UTF-8 (spec §3.6). */
export const MAX_VM_CONFIG_PATH = 4096;
/** VM_CONFIG text: 1 to 65536 octets of UTF-8 (spec §3.6). */
export const MAX_VM_CONFIG_TEXT = 65536;
/** ENGINE_COMPAT fixed part: engine_id and reserved (spec §3.14). */
export const ENGINE_COMPAT_SUBHEADER_SIZE = 8;
/** ENGINE_COMPAT descriptor: 1 to 256 octets of printable ASCII (spec §3.14). */
export const MAX_ENGINE_COMPAT_DESCRIPTOR = 256;

export interface RecordTypeInfo {
  readonly layer: Layer;
  readonly type: number;
  readonly name: string;
  readonly minBody: number;
  readonly maxBody: number;
  /** False for reserved types this revision knows but rejects (kvm state). */
  readonly supported: boolean;
}

function info(layer: Layer, type: number, name: string, minBody: number, maxBody: number, supported = true): RecordTypeInfo {
  return { layer, type, name, minBody, maxBody, supported };
}

const TOOLSTACK_TYPES: readonly RecordTypeInfo[] = [
  info("toolstack", TOOLSTACK_RECORD.END, "END", 0, 0),
  info("toolstack", TOOLSTACK_RECORD.MEMORY_STREAM, "MEMORY_STREAM", 0, 0),
  info("toolstack", TOOLSTACK_RECORD.EMULATOR_CONTEXT, "EMULATOR_CONTEXT", BLOB_SUBHEADER_SIZE + 1, BLOB_SUBHEADER_SIZE + MAX_BLOB_SIZE),
  info("toolstack", TOOLSTACK_RECORD.CHECKPOINT_END, "CHECKPOINT_END", 0, 0),
  info("toolstack", TOOLSTACK_RECORD.CHECKPOINT_STATE, "CHECKPOINT_STATE", CHECKPOINT_STATE_BODY, CHECKPOINT_STATE_BODY),
  info("toolstack", TOOLSTACK_RECORD.HEARTBEAT, "HEARTBEAT", HEARTBEAT_BODY, HEARTBEAT_BODY),
  info("toolstack", TOOLSTACK_RECORD.REPLICATION_MODE, "REPLICATION_MODE", REPLICATION_MODE_BODY, REPLICATION_MODE_BODY),
  info("toolstack", TOOLSTACK_RECORD.NET_FRAME, "NET_FRAME", NET_FRAME_SUBHEADER + MIN_NET_FRAME, NET_FRAME_SUBHEADER + MAX_NET_FRAME),
  info("toolstack", TOOLSTACK_RECORD.DISK_WRITE, "DISK_WRITE", DISK_WRITE_SUBHEADER + 1, DISK_WRITE_SUBHEADER + MAX_DISK_WRITE_DATA),
  info("toolstack", TOOLSTACK_RECORD.DISK_CHECKPOINT, "DISK_CHECKPOINT", DISK_CHECKPOINT_BODY, DISK_CHECKPOINT_BODY),
  info("toolstack", TOOLSTACK_RECORD.DISK_INFO, "DISK_INFO", DISK_INFO_SUBHEADER + SHA256_OCTETS, DISK_INFO_SUBHEADER + MAX_DISK_CHUNKS * SHA256_OCTETS),
  info("toolstack", TOOLSTACK_RECORD.DISK_WANT, "DISK_WANT", DISK_WANT_SUBHEADER, DISK_WANT_SUBHEADER + 4 * MAX_DISK_CHUNKS),
  info("toolstack", TOOLSTACK_RECORD.CHECKPOINT_REQUEST, "CHECKPOINT_REQUEST", CHECKPOINT_REQUEST_BODY, CHECKPOINT_REQUEST_BODY),
  info("toolstack", TOOLSTACK_RECORD.LINK_TRANSLATION, "LINK_TRANSLATION", MIN_LINK_TRANSLATION_BODY, MAX_LINK_TRANSLATION_BODY),
  info("toolstack", TOOLSTACK_RECORD.DISK_PLAN, "DISK_PLAN", DISK_PLAN_SUBHEADER, MAX_DISK_PLAN_BODY),
  info("toolstack", TOOLSTACK_RECORD.DISK_LOG, "DISK_LOG", DISK_LOG_SUBHEADER, MAX_DISK_LOG_BODY),
  info("toolstack", TOOLSTACK_RECORD.DISK_SYNCED, "DISK_SYNCED", DISK_SYNCED_BODY, DISK_SYNCED_BODY),
  info("toolstack", TOOLSTACK_RECORD.VM_CONFIG, "VM_CONFIG", VM_CONFIG_SUBHEADER_SIZE + 2, VM_CONFIG_SUBHEADER_SIZE + MAX_VM_CONFIG_PATH + MAX_VM_CONFIG_TEXT),
  info("toolstack", TOOLSTACK_RECORD.ENGINE_COMPAT, "ENGINE_COMPAT", ENGINE_COMPAT_SUBHEADER_SIZE + 1, ENGINE_COMPAT_SUBHEADER_SIZE + MAX_ENGINE_COMPAT_DESCRIPTOR),
];

const MEMORY_TYPES: readonly RecordTypeInfo[] = [
  info("memory", MEMORY_RECORD.END, "END", 0, 0),
  info("memory", MEMORY_RECORD.PAGE_DATA, "PAGE_DATA", PAGE_DATA_HEADER_SIZE + PFN_ENTRY_SIZE, MAX_PAGE_DATA_BODY),
  info("memory", MEMORY_RECORD.CHECKPOINT, "CHECKPOINT", 0, 0),
  info("memory", MEMORY_RECORD.CHECKPOINT_DIRTY_PFN_LIST, "CHECKPOINT_DIRTY_PFN_LIST", 0, MAX_DIRTY_PFNS_PER_RECORD * PFN_ENTRY_SIZE),
  info("memory", MEMORY_RECORD.EMU_STATE, "EMU_STATE", BLOB_SUBHEADER_SIZE + 1, BLOB_SUBHEADER_SIZE + MAX_BLOB_SIZE),
  info("memory", MEMORY_RECORD.QEMU_STATE, "QEMU_STATE", BLOB_SUBHEADER_SIZE + 1, BLOB_SUBHEADER_SIZE + MAX_BLOB_SIZE),
  info("memory", MEMORY_RECORD.PRECOPY_ROUND, "PRECOPY_ROUND", PRECOPY_ROUND_BODY, PRECOPY_ROUND_BODY),
  ...Object.entries(KVM_RECORD).map(([name, type]) => info("memory", type, name, 0, MAX_RECORD_BODY, false)),
];

const REGISTRY: ReadonlyMap<Layer, ReadonlyMap<number, RecordTypeInfo>> = new Map([
  ["toolstack", new Map(TOOLSTACK_TYPES.map((t) => [t.type, t]))],
  ["memory", new Map(MEMORY_TYPES.map((t) => [t.type, t]))],
]);

/** The registry entry of a type, or undefined when this revision does not know it. */
export function recordTypeInfo(layer: Layer, type: number): RecordTypeInfo | undefined {
  const known = REGISTRY.get(layer)?.get(type);
  if (known) return known;
  if (layer === "memory" && type >= KVM_RECORD_RANGE.first && type <= KVM_RECORD_RANGE.last) {
    return info("memory", type, "KVM_RESERVED", 0, MAX_RECORD_BODY, false);
  }
  return undefined;
}

/** "memory record PAGE_DATA (0x00000001)", for error messages. */
export function describeRecord(layer: Layer, type: number): string {
  const name = recordTypeInfo(layer, type)?.name ?? "unknown";
  return `${layer} record ${name} (${hex32(type)})`;
}

/** The layer, name and type of a describeRecord() string (a StreamError's `what`), or undefined for a header or a layer. */
export function parseRecordDescription(what: string): { layer: Layer; name: string; type: number } | undefined {
  const m = /^(toolstack|memory) record (\S+) \(0x([0-9A-F]{8})\)$/.exec(what);
  if (m === null || m[1] === undefined || m[2] === undefined || m[3] === undefined) return undefined;
  return { layer: m[1] === "toolstack" ? "toolstack" : "memory", name: m[2], type: parseInt(m[3], 16) };
}
