/**
 * verifyStream(): checks a whole colo stream (docs/specs/stream.md) for
 * `colo stream verify`, after Xen's verify-stream-v2. Every header and
 * record goes through StreamReader — the framing, the limits, the field,
 * page and grammar rules every receiver applies — so "valid" means exactly
 * "a receiver's reader accepts it", and a rejection names what a receiver
 * would name. Memory stays bounded by the largest record the spec allows
 * (the reader checks body_length against its limits before it allocates);
 * of the stream only counts are kept.
 *
 * A rejection becomes a VerifyFailure: the record (its index, layer, name
 * and type) or header, its offset, the rule (StreamError code and the spec
 * section that states it), and one line that says all of it.
 */
import { Buffer } from "node:buffer";
import type { EngineId } from "../engine/engine.js";
import type { ByteSource } from "./byte-source.js";
import type { CheckpointControl } from "./checkpoint-records.js";
import type { ReplicationModeName } from "./colo-records.js";
import { engineStateRecordType, type EngineState } from "./engine-state.js";
import { hex32, StreamError, type StreamErrorCode } from "./errors.js";
import { PAGE_TYPE } from "./pfn-entry.js";
import { StreamReader } from "./reader.js";
import { parseRecordDescription, recordTypeInfo, type Layer } from "./record-types.js";
import type { StreamRecord } from "./records.js";
import type { Channel } from "./sequence.js";

export interface VerifyOptions {
  /** "image" (save file, migration, COLO forward stream; default) or "back-channel". */
  channel?: Channel;
  /** Says what an engine state blob holds (the format does not look inside; the CLI names a QEMU_STATE's QEMU). */
  describeEngineState?: (state: EngineState) => string | undefined;
}

/** What the records say the stream is: inferred, the format itself does not say. */
export type StreamKind = "save" | "migration" | "replication" | "back-channel";

export interface RecordTally {
  count: number;
  /** Octets, record headers and padding included. */
  bytes: number;
}

export interface StreamSummary {
  channel: Channel;
  /** replication: a memory part closed by CHECKPOINT; migration: a live pre-copy round; else save. */
  kind: StreamKind;
  /** Octets read (the whole stream once it is valid). */
  bytes: number;
  /** Framed records, END included (the toolstack, memory image and machine headers are not records). */
  records: number;
  /** Per layer and record name (an unknown optional type as "optional 0x8000xxxx"). */
  types: Record<Layer, Record<string, RecordTally>>;
  machine: { engine: EngineId; memoryBytes: number; vcpuCount: number; pageCount: number } | undefined;
  /** PAGE_DATA: records and pfn entries (NORMAL with contents, ZERO without). */
  pages: { records: number; entries: number; normal: number; zero: number };
  memoryParts: number;
  /** Memory parts closed by CHECKPOINT (checkpoint 0, the initial sync, included). */
  checkpoints: number;
  precopyRounds: number;
  /** The last engine state (one per memory part) and how many there were. */
  engineState: { record: string; engine: EngineId; formatVersion: number; bytes: number; count: number; info?: string } | undefined;
  engineCompat: { engine: EngineId; descriptor: string } | undefined;
  vmConfig: { path: string; textBytes: number } | undefined;
  replication: { mode: ReplicationModeName; disks: boolean } | undefined;
  /** CHECKPOINT_STATE records by control id (NEW on the forward stream, SVM_* on the back channel). */
  controls: Partial<Record<CheckpointControl, number>>;
}

export interface VerifyFailure {
  code: StreamErrorCode;
  /**
   * The record concerned, numbered from 0 (the first record after the
   * toolstack header); for a truncation at a record boundary, the record
   * that is missing. Undefined for a header.
   */
  record: number | undefined;
  /** The record's layer, name and type, when its header was read. */
  layer: Layer | undefined;
  name: string | undefined;
  type: number | undefined;
  /** The reader's name for it: "toolstack header", "machine header", "memory record PAGE_DATA (0x00000001)", ... */
  what: string | undefined;
  /** Where the header or record starts. */
  offset: number | undefined;
  /** TRUNCATED: the offset at which the source ended. */
  endedAt: number | undefined;
  /** The spec sections that state the rule broken ("§4.4"); empty when it is not the stream's fault (IO). */
  section: string;
  /** What is wrong, as the reader says it. */
  detail: string;
  /** All of the above in one line. */
  line: string;
}

export type VerifyResult = { ok: true; summary: StreamSummary } | { ok: false; failure: VerifyFailure; summary: StreamSummary };

type NamedKind = Exclude<StreamRecord["kind"], "machine-header" | "skipped" | "engine-state">;

/** The layer and name of each record the reader yields (engine states and skipped records are named from their contents). */
const RECORD_NAMES: Record<NamedKind, readonly [Layer, string]> = {
  "vm-config": ["toolstack", "VM_CONFIG"],
  "engine-compat": ["toolstack", "ENGINE_COMPAT"],
  "memory-stream": ["toolstack", "MEMORY_STREAM"],
  "emulator-context": ["toolstack", "EMULATOR_CONTEXT"],
  "checkpoint-end": ["toolstack", "CHECKPOINT_END"],
  "checkpoint-state": ["toolstack", "CHECKPOINT_STATE"],
  heartbeat: ["toolstack", "HEARTBEAT"],
  "replication-mode": ["toolstack", "REPLICATION_MODE"],
  "net-frame": ["toolstack", "NET_FRAME"],
  "disk-write": ["toolstack", "DISK_WRITE"],
  "disk-checkpoint": ["toolstack", "DISK_CHECKPOINT"],
  "disk-info": ["toolstack", "DISK_INFO"],
  "disk-want": ["toolstack", "DISK_WANT"],
  "checkpoint-request": ["toolstack", "CHECKPOINT_REQUEST"],
  "link-translation": ["toolstack", "LINK_TRANSLATION"],
  "disk-plan": ["toolstack", "DISK_PLAN"],
  "disk-log": ["toolstack", "DISK_LOG"],
  "disk-synced": ["toolstack", "DISK_SYNCED"],
  end: ["toolstack", "END"],
  "page-data": ["memory", "PAGE_DATA"],
  "precopy-round": ["memory", "PRECOPY_ROUND"],
  "dirty-pfn-list": ["memory", "CHECKPOINT_DIRTY_PFN_LIST"],
  checkpoint: ["memory", "CHECKPOINT"],
  "memory-end": ["memory", "END"],
};

/** The spec section of each record type's layout and field rules. */
const RECORD_SECTIONS: Record<Layer, Readonly<Record<string, string>>> = {
  toolstack: {
    END: "§3.2",
    MEMORY_STREAM: "§3.3",
    EMULATOR_CONTEXT: "§3.4",
    CHECKPOINT_END: "§3.2",
    CHECKPOINT_STATE: "§3.5",
    VM_CONFIG: "§3.6",
    HEARTBEAT: "§3.7",
    REPLICATION_MODE: "§3.8",
    NET_FRAME: "§3.9",
    DISK_WRITE: "§3.10",
    DISK_CHECKPOINT: "§3.11",
    DISK_INFO: "§3.12",
    DISK_WANT: "§3.12",
    CHECKPOINT_REQUEST: "§3.13",
    ENGINE_COMPAT: "§3.14",
    LINK_TRANSLATION: "§3.15",
    DISK_PLAN: "§3.16",
    DISK_LOG: "§3.17",
    DISK_SYNCED: "§3.18",
  },
  memory: {
    END: "§4.3",
    PAGE_DATA: "§4.4",
    CHECKPOINT: "§4.3",
    CHECKPOINT_DIRTY_PFN_LIST: "§4.5",
    EMU_STATE: "§4.6",
    PRECOPY_ROUND: "§4.8",
    QEMU_STATE: "§4.9",
  },
};

const HEADER_SECTIONS: Readonly<Record<string, string>> = {
  "toolstack header": "§3.1",
  "memory headers": "§4.1, §4.2",
  "memory image header": "§4.1",
  "machine header": "§4.2",
};

function emptySummary(channel: Channel): StreamSummary {
  return {
    channel,
    kind: channel === "back-channel" ? "back-channel" : "save",
    bytes: 0,
    records: 0,
    types: { toolstack: {}, memory: {} },
    machine: undefined,
    pages: { records: 0, entries: 0, normal: 0, zero: 0 },
    memoryParts: 0,
    checkpoints: 0,
    precopyRounds: 0,
    engineState: undefined,
    engineCompat: undefined,
    vmConfig: undefined,
    replication: undefined,
    controls: {},
  };
}

/** Reads `source` to its END (or its first fault) and sums it up; never throws for a bad stream. */
export async function verifyStream(source: ByteSource, options: VerifyOptions = {}): Promise<VerifyResult> {
  const channel = options.channel ?? "image";
  const summary = emptySummary(channel);
  const reader = new StreamReader(source, { channel, requireEndOfSource: true });
  let live = false;
  try {
    for (;;) {
      const record = await reader.next();
      if (record === undefined) break;
      const bytes = reader.offset - record.offset;
      summary.bytes = reader.offset;
      if (record.kind === "machine-header") {
        const m = record.machine;
        summary.machine = { engine: m.engineId, memoryBytes: m.memoryBytes, vcpuCount: m.vcpuCount, pageCount: m.pageCount };
        continue;
      }
      summary.records++;
      const [layer, name] = recordName(record);
      const tally = (summary.types[layer][name] ??= { count: 0, bytes: 0 });
      tally.count++;
      tally.bytes += bytes;
      note(summary, record, bytes, options);
      if (record.kind === "precopy-round" && !record.round.final) live = true;
    }
  } catch (err) {
    summary.bytes = reader.offset;
    summary.kind = kindOf(summary, channel, live);
    return { ok: false, failure: failureOf(err, summary.records, reader.offset, channel), summary };
  }
  summary.kind = kindOf(summary, channel, live);
  return { ok: true, summary };
}

function kindOf(summary: StreamSummary, channel: Channel, live: boolean): StreamKind {
  if (channel === "back-channel") return "back-channel";
  if (summary.checkpoints > 0) return "replication";
  return live ? "migration" : "save";
}

function recordName(record: Exclude<StreamRecord, { kind: "machine-header" }>): readonly [Layer, string] {
  if (record.kind === "skipped") return [record.layer, `optional ${hex32(record.type)}`];
  if (record.kind === "engine-state") {
    const type = engineStateRecordType(record.state.engineId);
    return ["memory", (type === undefined ? undefined : recordTypeInfo("memory", type)?.name) ?? "engine state"];
  }
  return RECORD_NAMES[record.kind];
}

function note(summary: StreamSummary, record: StreamRecord, bytes: number, options: VerifyOptions): void {
  switch (record.kind) {
    case "vm-config":
      summary.vmConfig = { path: record.config.path, textBytes: Buffer.byteLength(record.config.text, "utf8") };
      return;
    case "engine-compat":
      summary.engineCompat = { engine: record.compat.engineId, descriptor: record.compat.descriptor };
      return;
    case "replication-mode":
      summary.replication = { mode: record.mode.mode, disks: record.mode.disks };
      return;
    case "checkpoint-state":
      summary.controls[record.control] = (summary.controls[record.control] ?? 0) + 1;
      return;
    case "memory-stream":
      summary.memoryParts++;
      return;
    case "checkpoint":
      summary.checkpoints++;
      return;
    case "precopy-round":
      summary.precopyRounds++;
      return;
    case "page-data": {
      const p = summary.pages;
      p.records++;
      p.entries += record.pages.types.length;
      for (const t of record.pages.types) {
        if (t === PAGE_TYPE.ZERO) p.zero++;
        else p.normal++;
      }
      return;
    }
    case "engine-state": {
      const s = record.state;
      const info = options.describeEngineState?.(s);
      summary.engineState = {
        record: recordName(record)[1],
        engine: s.engineId,
        formatVersion: s.formatVersion,
        bytes,
        count: (summary.engineState?.count ?? 0) + 1,
        ...(info === undefined ? {} : { info }),
      };
      return;
    }
    default:
      return;
  }
}

function failureOf(err: unknown, recordsRead: number, endedAt: number, channel: Channel): VerifyFailure {
  const e = err instanceof StreamError ? err : new StreamError("INTERNAL", undefined, err instanceof Error ? err.message : String(err));
  const what = e.what;
  const parsed = what === undefined ? undefined : parseRecordDescription(what);
  const isHeader = what !== undefined && HEADER_SECTIONS[what] !== undefined;
  const failure: VerifyFailure = {
    code: e.code,
    record: isHeader || what === undefined ? undefined : recordsRead,
    layer: parsed?.layer,
    name: parsed?.name,
    type: parsed?.type,
    what,
    offset: e.offset,
    endedAt: e.code === "TRUNCATED" ? endedAt : undefined,
    section: sectionOf(e, parsed, channel),
    detail: e.detail,
    line: "",
  };
  failure.line = lineOf(failure);
  return failure;
}

/** The spec sections that state the rule a StreamError enforces. */
function sectionOf(e: StreamError, record: { layer: Layer; name: string } | undefined, channel: Channel): string {
  const grammar = channel === "image" ? "§6.1" : "§6.3";
  const own = record === undefined ? (e.what === undefined ? undefined : HEADER_SECTIONS[e.what]) : RECORD_SECTIONS[record.layer][record.name];
  switch (e.code) {
    case "IO":
    case "INTERNAL":
      return "";
    case "TRUNCATED":
    case "TRAILING_DATA":
      return channel === "image" ? "§6.1, §7" : "§7";
    case "OUT_OF_ORDER":
      return grammar;
    case "BAD_PADDING":
      return "§2";
    case "UNKNOWN_RECORD":
      return record?.layer === "memory" ? "§2, §4.3" : "§2, §3.2";
    case "UNSUPPORTED_RECORD":
      return "§4.7";
    case "BAD_LENGTH":
      // The 64 MiB limit of any record is §2's; a type's own bounds are its section's.
      return own === undefined || e.detail.includes("for any record") ? "§2" : own;
    case "MISMATCH":
      return own ?? "§4.2";
    default:
      // A header: its section; the machine header's engine against ENGINE_COMPAT is §3.14's rule too.
      if (e.what === "machine header" && e.detail.includes("ENGINE_COMPAT")) return "§4.2, §3.14";
      return own ?? "§7";
  }
}

/** The one line: where (record K and its type, or the header), what is wrong, the rule. */
function lineOf(f: VerifyFailure): string {
  const rule = f.section === "" ? `[${f.code}]` : `[${f.code}, spec ${f.section}]`;
  const typed = f.name !== undefined && f.layer !== undefined && f.type !== undefined ? `${f.layer} ${f.name} ${hex32(f.type)}` : undefined;
  if (f.what === undefined || f.offset === undefined) return `${f.detail} ${rule}`;
  if (f.code === "TRUNCATED") {
    const at = `truncated at offset ${f.endedAt ?? f.offset}`;
    if (f.record === undefined) return `${at} inside the ${f.what} (from offset ${f.offset}): ${f.detail} ${rule}`;
    if (typed !== undefined) return `${at} inside record ${f.record} (${typed}, from offset ${f.offset}): ${f.detail} ${rule}`;
    if (f.what.endsWith("record header")) return `${at} inside the header of record ${f.record} (from offset ${f.offset}): ${f.detail} ${rule}`;
    return `${at} before record ${f.record}: ${f.detail} ${rule}`;
  }
  if (f.record === undefined) return `${f.what} at offset ${f.offset}: ${f.detail} ${rule}`;
  return `record ${f.record} (${typed ?? f.what}) at offset ${f.offset}: ${f.detail} ${rule}`;
}
