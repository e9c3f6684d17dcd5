/**
 * StreamReader: pulls a colo stream (docs/specs/stream.md) from any byte
 * source and yields one typed, validated record at a time. It holds at most
 * one record body (bounded by its type's maximum, checked before allocating)
 * and never the whole image. Every failure is a StreamError; after one, the
 * reader stays failed.
 */
import { ByteSourceReader, type ByteSource } from "./byte-source.js";
import { decodeCheckpointState, decodeDirtyPfnList } from "./checkpoint-records.js";
import { decodeEmulatorContext } from "./emulator-context.js";
import { decodeEngineCompat } from "./engine-compat-record.js";
import { decodeLinkTranslation } from "./link-translation-record.js";
import { decodeDiskLog, decodeDiskPlan, decodeDiskSynced } from "./disk-log-records.js";
import { decodeEmuState, decodeQemuState } from "./engine-state.js";
import { hex32, StreamError, type StreamLocation } from "./errors.js";
import { isOptionalType, MAX_RECORD_BODY, OPTIONAL_RECORD_BIT, paddingLength, RECORD_HEADER_SIZE, recordHeaderLayout } from "./framing.js";
import {
  checkMachineExpectation,
  decodeMachineHeader,
  decodeMemoryImageHeader,
  MEMORY_HEADERS_SIZE,
  memoryImageHeaderLayout,
  type MachineExpectation,
  type MachineHeader,
} from "./memory-header.js";
import { decodeHeartbeat } from "./heartbeat-record.js";
import { decodeCheckpointRequest, decodeDiskCheckpoint, decodeDiskInfo, decodeDiskWant, decodeDiskWrite, decodeNetFrame, decodeReplicationMode } from "./colo-records.js";
import { decodePageData } from "./page-data.js";
import { decodePrecopyRound } from "./precopy-round.js";
import { describeRecord, MEMORY_RECORD, recordTypeInfo, TOOLSTACK_RECORD, type Layer } from "./record-types.js";
import type { StreamRecord } from "./records.js";
import { StreamSequence, type Channel, type SequenceEvent } from "./sequence.js";
import { decodeToolstackHeader, TOOLSTACK_HEADER_SIZE } from "./toolstack-header.js";
import { decodeVmConfig } from "./vm-config-record.js";

export interface ReaderOptions {
  /** "image" (save file, migration, COLO forward; default) or "back-channel" (the SVM's answers). */
  channel?: Channel;
  /** The machine the receiver will load into: a machine header that differs is rejected (MISMATCH). */
  expect?: MachineExpectation;
  /**
   * Require the source to end right after the toolstack END (files): extra
   * bytes are rejected (TRAILING_DATA). Leave false on a connection that
   * stays open after the stream.
   */
  requireEndOfSource?: boolean;
}

export class StreamReader implements AsyncIterable<StreamRecord> {
  private readonly source: ByteSourceReader;
  private readonly sequence: StreamSequence;
  private readonly options: ReaderOptions;
  private failure: StreamError | undefined;
  private finished = false;
  private busy = false;

  constructor(source: ByteSource, options: ReaderOptions = {}) {
    this.source = new ByteSourceReader(source);
    this.options = options;
    this.sequence = new StreamSequence(options.channel ?? "image");
  }

  /** Stream offset of the next unread octet. */
  get offset(): number {
    return this.source.offset;
  }

  /** The machine header, once read. */
  get machine(): MachineHeader | undefined {
    return this.sequence.machine;
  }

  /**
   * The next record; undefined once the toolstack END has been returned.
   * Calls must not overlap (await each one).
   */
  async next(): Promise<StreamRecord | undefined> {
    if (this.failure !== undefined) throw this.failure;
    if (this.finished) return undefined;
    if (this.busy) throw new StreamError("INTERNAL", undefined, "StreamReader.next() called while a previous call is pending");
    this.busy = true;
    try {
      const record = await this.step();
      if (record.kind === "end") this.finished = true;
      return record;
    } catch (err) {
      this.failure =
        err instanceof StreamError
          ? err
          : new StreamError("INTERNAL", { offset: this.source.offset, what: "reader" }, `unexpected failure: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      throw this.failure;
    } finally {
      this.busy = false;
    }
  }

  /**
   * Iterate the records up to and including END. Leaving the loop early does
   * not close the source: its owner does.
   */
  async *[Symbol.asyncIterator](): AsyncGenerator<StreamRecord, void, undefined> {
    for (;;) {
      const record = await this.next();
      if (record === undefined) return;
      yield record;
    }
  }

  /**
   * A line the peer sent on the same connection after the stream's END (the
   * migration handover's messages, docs/migration.md); undefined when the
   * connection ended. Only after END.
   */
  async readLineAfterEnd(maxBytes: number): Promise<string | undefined> {
    if (!this.finished) throw new StreamError("INTERNAL", undefined, "StreamReader.readLineAfterEnd() before the stream's END");
    return this.source.readLine(maxBytes, { offset: this.source.offset, what: "a line after END" });
  }

  /** Octets pulled from the source after the stream's END but not consumed. */
  takeBuffered(): Uint8Array {
    return this.source.takeBuffered();
  }

  private async step(): Promise<StreamRecord> {
    for (;;) {
      switch (this.sequence.expecting) {
        case "toolstack-header": {
          const where = { offset: this.source.offset, what: "toolstack header" };
          const bytes = await this.source.readExact(TOOLSTACK_HEADER_SIZE, where);
          decodeToolstackHeader(bytes, where.offset);
          this.sequence.accept({ kind: "toolstack-header" }, where);
          continue;
        }
        case "memory-headers":
          return this.readMemoryHeaders();
        case "toolstack-record":
          return this.readRecord("toolstack");
        case "memory-record":
          return this.readRecord("memory");
        case "done":
          throw new StreamError("INTERNAL", { offset: this.source.offset, what: "reader" }, "read past END");
      }
    }
  }

  private async readMemoryHeaders(): Promise<StreamRecord> {
    const offset = this.source.offset;
    const bytes = await this.source.readExact(MEMORY_HEADERS_SIZE, { offset, what: "memory headers" });
    decodeMemoryImageHeader(bytes, offset);
    const machineOffset = offset + memoryImageHeaderLayout.size;
    const machine = decodeMachineHeader(bytes.subarray(memoryImageHeaderLayout.size), machineOffset);
    const where = { offset: machineOffset, what: "machine header" };
    const compat = this.sequence.engineCompatEngine;
    if (compat !== undefined && compat !== machine.engineId) {
      throw new StreamError("BAD_FIELD", where, `engine ${machine.engineId}, but the stream's ENGINE_COMPAT named engine ${compat} (they must be the same)`);
    }
    checkMachineExpectation(machine, this.options.expect, where);
    this.sequence.accept({ kind: "machine-header", machine }, where);
    return { kind: "machine-header", offset, machine };
  }

  private async readRecord(layer: Layer): Promise<StreamRecord> {
    const offset = this.source.offset;
    if (await this.source.atEnd()) {
      throw new StreamError("TRUNCATED", { offset, what: `${layer} layer` }, "the stream ended before its END record");
    }
    const head = await this.source.readExact(RECORD_HEADER_SIZE, { offset, what: `${layer} record header` });
    const { type, bodyLength } = recordHeaderLayout.decode(head);
    const where: StreamLocation = { offset, what: describeRecord(layer, type) };
    if (bodyLength > MAX_RECORD_BODY) {
      throw new StreamError("BAD_LENGTH", where, `body_length ${bodyLength} exceeds the limit of ${MAX_RECORD_BODY} for any record`);
    }
    const info = recordTypeInfo(layer, type);
    if (info === undefined) {
      if (!isOptionalType(type)) throw new StreamError("UNKNOWN_RECORD", where, `unknown mandatory record type ${hex32(type)}`);
      const shadowed = recordTypeInfo(layer, type & ~OPTIONAL_RECORD_BIT);
      if (shadowed !== undefined) {
        throw new StreamError("UNKNOWN_RECORD", where, `optional type ${hex32(type)} shadows the mandatory ${shadowed.name}: reserved (a corrupt type?)`);
      }
      await this.source.skip(bodyLength, where);
      await this.readPadding(bodyLength, where);
      this.sequence.accept({ kind: "unknown-optional" }, where);
      return { kind: "skipped", offset, layer, type, bodyLength };
    }
    if (!info.supported) {
      throw new StreamError("UNSUPPORTED_RECORD", where, "kvm engine state is reserved and not supported by this revision of the format");
    }
    if (bodyLength < info.minBody || bodyLength > info.maxBody) {
      const bounds = info.minBody === info.maxBody ? `exactly ${info.minBody}` : `${info.minBody} to ${info.maxBody}`;
      throw new StreamError("BAD_LENGTH", where, `body_length ${bodyLength}, ${info.name} takes ${bounds}`);
    }
    const body = await this.source.readExact(bodyLength, where);
    await this.readPadding(bodyLength, where);
    const [record, event] = this.decode(layer, type, body, where);
    if (record.kind === "end" && this.options.requireEndOfSource && !(await this.source.atEnd())) {
      throw new StreamError("TRAILING_DATA", where, "bytes follow the END record");
    }
    this.sequence.accept(event, where);
    return record;
  }

  private async readPadding(bodyLength: number, where: StreamLocation): Promise<void> {
    const length = paddingLength(bodyLength);
    if (length === 0) return;
    const padding = await this.source.readExact(length, where);
    if (padding.some((b) => b !== 0)) throw new StreamError("BAD_PADDING", where, `non-zero padding after a body of ${bodyLength} octets`);
  }

  private requireMachine(where: StreamLocation): MachineHeader {
    const machine = this.sequence.machine;
    if (machine === undefined) throw new StreamError("OUT_OF_ORDER", where, "a memory record before the machine header");
    return machine;
  }

  /** Decode a body whose length is within the type's bounds. */
  private decode(layer: Layer, type: number, body: Uint8Array, where: StreamLocation): [StreamRecord, SequenceEvent] {
    const offset = where.offset;
    if (layer === "toolstack") {
      switch (type) {
        case TOOLSTACK_RECORD.END:
          return [{ kind: "end", offset }, { kind: "end" }];
        case TOOLSTACK_RECORD.MEMORY_STREAM:
          return [{ kind: "memory-stream", offset }, { kind: "memory-stream" }];
        case TOOLSTACK_RECORD.EMULATOR_CONTEXT: {
          const context = decodeEmulatorContext(body, where);
          return [
            { kind: "emulator-context", offset, context },
            { kind: "emulator-context", emulatorId: context.emulatorId, index: context.index },
          ];
        }
        case TOOLSTACK_RECORD.CHECKPOINT_END:
          return [{ kind: "checkpoint-end", offset }, { kind: "checkpoint-end" }];
        case TOOLSTACK_RECORD.CHECKPOINT_STATE: {
          const control = decodeCheckpointState(body, where);
          return [{ kind: "checkpoint-state", offset, control }, { kind: "checkpoint-state", control }];
        }
        case TOOLSTACK_RECORD.HEARTBEAT: {
          const heartbeat = decodeHeartbeat(body, where, this.sequence.lastHeartbeatSequence);
          return [{ kind: "heartbeat", offset, heartbeat }, { kind: "heartbeat", sequence: heartbeat.sequence }];
        }
        case TOOLSTACK_RECORD.REPLICATION_MODE: {
          const mode = decodeReplicationMode(body, where);
          return [{ kind: "replication-mode", offset, mode }, { kind: "replication-mode" }];
        }
        case TOOLSTACK_RECORD.NET_FRAME: {
          const net = decodeNetFrame(body, where);
          return [{ kind: "net-frame", offset, net }, { kind: "net-frame", direction: net.direction }];
        }
        case TOOLSTACK_RECORD.DISK_WRITE: {
          const write = decodeDiskWrite(body, where);
          return [{ kind: "disk-write", offset, write }, { kind: "disk-write" }];
        }
        case TOOLSTACK_RECORD.DISK_CHECKPOINT: {
          const checkpoint = decodeDiskCheckpoint(body, where);
          return [{ kind: "disk-checkpoint", offset, checkpoint }, { kind: "disk-checkpoint" }];
        }
        case TOOLSTACK_RECORD.DISK_INFO: {
          const info = decodeDiskInfo(body, where);
          return [{ kind: "disk-info", offset, info }, { kind: "disk-info" }];
        }
        case TOOLSTACK_RECORD.DISK_WANT: {
          const want = decodeDiskWant(body, where);
          return [{ kind: "disk-want", offset, want }, { kind: "disk-want" }];
        }
        case TOOLSTACK_RECORD.CHECKPOINT_REQUEST: {
          const request = decodeCheckpointRequest(body, where);
          return [{ kind: "checkpoint-request", offset, request }, { kind: "checkpoint-request" }];
        }
        case TOOLSTACK_RECORD.LINK_TRANSLATION: {
          const layers = decodeLinkTranslation(body, where);
          return [{ kind: "link-translation", offset, layers }, { kind: "link-translation" }];
        }
        case TOOLSTACK_RECORD.DISK_PLAN: {
          const plan = decodeDiskPlan(body, where);
          return [{ kind: "disk-plan", offset, plan }, { kind: "disk-plan" }];
        }
        case TOOLSTACK_RECORD.DISK_LOG: {
          const report = decodeDiskLog(body, where);
          return [{ kind: "disk-log", offset, report }, { kind: "disk-log" }];
        }
        case TOOLSTACK_RECORD.DISK_SYNCED: {
          const synced = decodeDiskSynced(body, where);
          return [{ kind: "disk-synced", offset, synced }, { kind: "disk-synced" }];
        }
        case TOOLSTACK_RECORD.VM_CONFIG: {
          const config = decodeVmConfig(body, where);
          return [{ kind: "vm-config", offset, config }, { kind: "vm-config" }];
        }
        case TOOLSTACK_RECORD.ENGINE_COMPAT: {
          const compat = decodeEngineCompat(body, where);
          return [{ kind: "engine-compat", offset, compat }, { kind: "engine-compat", engineId: compat.engineId }];
        }
      }
    } else {
      const machine = this.requireMachine(where);
      switch (type) {
        case MEMORY_RECORD.END:
          return [{ kind: "memory-end", offset }, { kind: "memory-end" }];
        case MEMORY_RECORD.PAGE_DATA: {
          const pages = decodePageData(body, where, machine.pageCount);
          return [{ kind: "page-data", offset, pages }, { kind: "page-data", pfns: pages.pfns }];
        }
        case MEMORY_RECORD.CHECKPOINT:
          return [{ kind: "checkpoint", offset }, { kind: "checkpoint" }];
        case MEMORY_RECORD.CHECKPOINT_DIRTY_PFN_LIST: {
          const pfns = decodeDirtyPfnList(body, where, machine.pageCount, this.sequence.lastDirtyPfn);
          return [{ kind: "dirty-pfn-list", offset, pfns }, { kind: "dirty-pfn-list", pfns }];
        }
        case MEMORY_RECORD.EMU_STATE: {
          const state = decodeEmuState(body, where, machine);
          return [{ kind: "engine-state", offset, state }, { kind: "engine-state" }];
        }
        case MEMORY_RECORD.QEMU_STATE: {
          const state = decodeQemuState(body, where, machine);
          return [{ kind: "engine-state", offset, state }, { kind: "engine-state" }];
        }
        case MEMORY_RECORD.PRECOPY_ROUND: {
          const round = decodePrecopyRound(body, where, machine.pageCount);
          return [{ kind: "precopy-round", offset, round }, { kind: "precopy-round" }];
        }
      }
    }
    throw new StreamError("INTERNAL", where, "a registered record type has no decoder");
  }
}

/**
 * Read a whole stream into memory (tests and small streams only: a real
 * receiver handles each record as it comes).
 */
export async function readAll(source: ByteSource, options: ReaderOptions = {}): Promise<StreamRecord[]> {
  const records: StreamRecord[] = [];
  for await (const record of new StreamReader(source, options)) records.push(record);
  return records;
}
