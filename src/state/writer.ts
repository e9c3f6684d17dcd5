/**
 * StreamWriter: writes a colo stream (docs/specs/stream.md) to a ByteSink
 * with backpressure. The same grammar as the reader (sequence.ts) and the
 * same field rules run before any byte is written, so a writer bug shows up
 * as a StreamError at the call, never as a stream the peer rejects. The
 * toolstack header goes out with the first record.
 *
 * Calls may be issued without awaiting the previous one: they are written
 * in call order. A failure of the sink fails every later call.
 */
import { dirtyPfnListProblem, encodeCheckpointState, encodeDirtyPfnList, type CheckpointControl } from "./checkpoint-records.js";
import { emulatorContextProblem, encodeEmulatorContextHead, type EmulatorContext } from "./emulator-context.js";
import { encodeEngineCompat, engineCompatProblem, type EngineCompat } from "./engine-compat-record.js";
import { encodeEngineStateHead, engineStateProblem, engineStateRecordType, type EngineState } from "./engine-state.js";
import { StreamError, type StreamErrorCode, type StreamLocation } from "./errors.js";
import { encodeRecordHeader, paddingFor, RECORD_HEADER_SIZE } from "./framing.js";
import { encodeHeartbeat, heartbeatProblem, type Heartbeat } from "./heartbeat-record.js";
import { encodeLinkTranslation, linkTranslationProblem, type LinkTranslationLayers } from "./link-translation-record.js";
import { diskLogProblem, diskPlanProblem, diskSyncedProblem, encodeDiskLog, encodeDiskPlan, encodeDiskSynced, type DiskLogReport, type DiskPlan, type DiskSynced } from "./disk-log-records.js";
import { encodeMemoryHeaders, type MachineHeader } from "./memory-header.js";
import { encodePageDataHead, pageDataProblem, type PageData } from "./page-data.js";
import { encodePrecopyRound, precopyRoundProblem, type PrecopyRound } from "./precopy-round.js";
import { describeRecord, MAX_DIRTY_PFNS_PER_RECORD, MEMORY_RECORD, recordTypeInfo, TOOLSTACK_RECORD, type Layer } from "./record-types.js";
import type { ByteSink } from "./sink.js";
import { StreamSequence, type Channel, type SequenceEvent } from "./sequence.js";
import { encodeToolstackHeader } from "./toolstack-header.js";
import { encodeVmConfig, type VmConfigInput } from "./vm-config-record.js";
import {
  checkpointRequestProblem,
  diskCheckpointProblem,
  diskInfoProblem,
  diskWantProblem,
  diskWriteProblem,
  encodeCheckpointRequest,
  encodeDiskCheckpoint,
  encodeDiskInfo,
  encodeDiskWant,
  encodeDiskWriteHead,
  encodeNetFrameHead,
  encodeReplicationMode,
  netFrameProblem,
  type CheckpointRequest,
  type DiskCheckpoint,
  type DiskInfo,
  type DiskWant,
  type DiskWrite,
  type NetFrame,
  type ReplicationMode,
} from "./colo-records.js";

export interface WriterOptions {
  /** The machine this stream describes (its memory headers follow the first MEMORY_STREAM). */
  machine: MachineHeader;
  /** "image" (default) or "back-channel". */
  channel?: Channel;
}

/** Chunks smaller than this are merged before they reach the sink (fewer syscalls). */
const COALESCE_BELOW = 64 * 1024;

export class StreamWriter {
  private readonly sink: ByteSink;
  private readonly sequence: StreamSequence;
  readonly machine: MachineHeader;
  private written = 0;
  private headerAccepted = false;
  private headerWritten = false;
  private tail: Promise<void> = Promise.resolve();
  private failure: StreamError | undefined;

  constructor(sink: ByteSink, options: WriterOptions) {
    this.sink = sink;
    this.machine = options.machine;
    this.sequence = new StreamSequence(options.channel ?? "image");
  }

  /** Octets handed to the sink so far. */
  get bytesWritten(): number {
    return this.written;
  }

  /** Whether the first memory part has been closed (a complete machine was written). */
  get complete(): boolean {
    return this.sequence.complete;
  }

  /**
   * VM_CONFIG (format XL_CFG): the VM's config file, its absolute `path` on
   * this host and its `text`. Image streams only, at most once, before the
   * first MEMORY_STREAM.
   */
  writeVmConfig(config: VmConfigInput): Promise<void> {
    return this.enqueue(() => {
      const body = encodeVmConfig(config);
      if (!(body instanceof Uint8Array)) {
        throw new StreamError(body.code, this.location(describeRecord("toolstack", TOOLSTACK_RECORD.VM_CONFIG)), body.detail);
      }
      return this.record("toolstack", TOOLSTACK_RECORD.VM_CONFIG, { kind: "vm-config" }, [body]);
    });
  }

  /**
   * ENGINE_COMPAT (optional, spec §3.14): this stream's engine (the machine's)
   * and what a receiving engine must match. Image streams only, at most once,
   * before the first MEMORY_STREAM; best right after VM_CONFIG, before
   * REPLICATION_MODE and the DISK_* records, so the receiver checks it first.
   */
  writeEngineCompat(compat: EngineCompat): Promise<void> {
    return this.enqueue(() => {
      const problem = engineCompatProblem(compat, this.machine.engineId);
      if (problem !== undefined) {
        throw new StreamError(problem.code, this.location(describeRecord("toolstack", TOOLSTACK_RECORD.ENGINE_COMPAT)), problem.detail);
      }
      const event: SequenceEvent = { kind: "engine-compat", engineId: compat.engineId };
      return this.record("toolstack", TOOLSTACK_RECORD.ENGINE_COMPAT, event, [encodeEngineCompat(compat)]);
    });
  }

  /** MEMORY_STREAM; the first one is followed by the memory image and machine headers (written with it). */
  writeMemoryStream(): Promise<void> {
    return this.enqueue(() => this.record("toolstack", TOOLSTACK_RECORD.MEMORY_STREAM, { kind: "memory-stream" }, []));
  }

  /** One PAGE_DATA record (at most 1024 pages; see writePages() for batching RAM). */
  writePageData(pages: PageData): Promise<void> {
    return this.enqueue(() => {
      this.check("BAD_PFN", "memory", MEMORY_RECORD.PAGE_DATA, pageDataProblem(pages, this.machine.pageCount));
      const head = encodePageDataHead(pages.pfns, pages.types);
      return this.record("memory", MEMORY_RECORD.PAGE_DATA, { kind: "page-data", pfns: pages.pfns }, [head, pages.data]);
    });
  }

  /** The engine's state (EMU_STATE for emu, QEMU_STATE for qemu), after the memory part's pages. */
  writeEngineState(state: EngineState): Promise<void> {
    return this.enqueue(() => {
      const type = engineStateRecordType(state.engineId);
      if (type === undefined) {
        throw new StreamError("BAD_FIELD", this.location("memory engine state"), `engine state of ${state.engineId} is not supported by this revision`);
      }
      this.check("BAD_FIELD", "memory", type, engineStateProblem(state, this.machine));
      return this.record("memory", type, { kind: "engine-state" }, [encodeEngineStateHead(state), state.blob]);
    });
  }

  /** PRECOPY_ROUND (optional): a migration round begins. */
  writePrecopyRound(round: PrecopyRound): Promise<void> {
    return this.enqueue(() => {
      this.check("BAD_FIELD", "memory", MEMORY_RECORD.PRECOPY_ROUND, precopyRoundProblem(round, this.machine.pageCount));
      return this.record("memory", MEMORY_RECORD.PRECOPY_ROUND, { kind: "precopy-round" }, [encodePrecopyRound(round)]);
    });
  }

  /**
   * The SVM's dirty pages (back channel), strictly ascending; split into
   * records of at most 65536 entries. An empty list writes one empty record.
   */
  writeDirtyPfnList(pfns: Uint32Array): Promise<void> {
    return this.enqueue(async () => {
      let start = 0;
      do {
        const slice = pfns.subarray(start, start + MAX_DIRTY_PFNS_PER_RECORD);
        const problem = dirtyPfnListProblem(slice, this.machine.pageCount, this.sequence.lastDirtyPfn);
        this.check("BAD_PFN", "memory", MEMORY_RECORD.CHECKPOINT_DIRTY_PFN_LIST, problem);
        await this.record("memory", MEMORY_RECORD.CHECKPOINT_DIRTY_PFN_LIST, { kind: "dirty-pfn-list", pfns: slice }, [encodeDirtyPfnList(slice)]);
        start += MAX_DIRTY_PFNS_PER_RECORD;
      } while (start < pfns.length);
    });
  }

  /** Memory CHECKPOINT: closes the memory part; the stream continues. */
  writeCheckpoint(): Promise<void> {
    return this.enqueue(() => this.record("memory", MEMORY_RECORD.CHECKPOINT, { kind: "checkpoint" }, []));
  }

  /** Memory END: closes the memory stream for good. */
  writeMemoryEnd(): Promise<void> {
    return this.enqueue(() => this.record("memory", MEMORY_RECORD.END, { kind: "memory-end" }, []));
  }

  writeEmulatorContext(context: EmulatorContext): Promise<void> {
    return this.enqueue(() => {
      this.check("BAD_FIELD", "toolstack", TOOLSTACK_RECORD.EMULATOR_CONTEXT, emulatorContextProblem(context));
      const event: SequenceEvent = { kind: "emulator-context", emulatorId: context.emulatorId, index: context.index };
      return this.record("toolstack", TOOLSTACK_RECORD.EMULATOR_CONTEXT, event, [encodeEmulatorContextHead(context), context.context]);
    });
  }

  writeCheckpointEnd(): Promise<void> {
    return this.enqueue(() => this.record("toolstack", TOOLSTACK_RECORD.CHECKPOINT_END, { kind: "checkpoint-end" }, []));
  }

  writeCheckpointState(control: CheckpointControl): Promise<void> {
    return this.enqueue(() =>
      this.record("toolstack", TOOLSTACK_RECORD.CHECKPOINT_STATE, { kind: "checkpoint-state", control }, [encodeCheckpointState(control)]),
    );
  }

  /**
   * HEARTBEAT (COLO replication control, spec §3.7): `sequence` must exceed
   * the stream's previous heartbeat (start at 0, add 1); both values are
   * integers in 0..2^53-1. Image streams: only where CHECKPOINT_STATE NEW
   * may come (after CHECKPOINT_END, outside a checkpoint, not between NEW and
   * MEMORY_STREAM). Back channel: anywhere in the toolstack layer.
   */
  writeHeartbeat(heartbeat: Heartbeat): Promise<void> {
    return this.enqueue(() => {
      this.check("BAD_FIELD", "toolstack", TOOLSTACK_RECORD.HEARTBEAT, heartbeatProblem(heartbeat, this.sequence.lastHeartbeatSequence));
      const event: SequenceEvent = { kind: "heartbeat", sequence: heartbeat.sequence };
      return this.record("toolstack", TOOLSTACK_RECORD.HEARTBEAT, event, [encodeHeartbeat(heartbeat)]);
    });
  }

  /** REPLICATION_MODE (spec §3.8): forward stream, before the first MEMORY_STREAM, once. */
  writeReplicationMode(mode: ReplicationMode): Promise<void> {
    return this.enqueue(() => this.record("toolstack", TOOLSTACK_RECORD.REPLICATION_MODE, { kind: "replication-mode" }, [encodeReplicationMode(mode)]));
  }

  /** LINK_TRANSLATION (spec §3.15): a survivor's link translations, before the first MEMORY_STREAM. */
  writeLinkTranslation(layers: LinkTranslationLayers): Promise<void> {
    return this.enqueue(() => {
      this.check("BAD_FIELD", "toolstack", TOOLSTACK_RECORD.LINK_TRANSLATION, linkTranslationProblem(layers));
      return this.record("toolstack", TOOLSTACK_RECORD.LINK_TRANSLATION, { kind: "link-translation" }, [encodeLinkTranslation(layers)]);
    });
  }

  /** NET_FRAME (spec §3.9): mirrored input on the forward stream, the SVM's output on the back channel. */
  writeNetFrame(net: NetFrame): Promise<void> {
    return this.enqueue(() => {
      this.check("BAD_LENGTH", "toolstack", TOOLSTACK_RECORD.NET_FRAME, netFrameProblem(net));
      return this.record("toolstack", TOOLSTACK_RECORD.NET_FRAME, { kind: "net-frame", direction: net.direction }, [encodeNetFrameHead(net), net.frame]);
    });
  }

  /** DISK_WRITE (spec §3.10): a PVM write (seq >= 1) or an initial-copy chunk (seq 0). */
  writeDiskWrite(write: DiskWrite): Promise<void> {
    return this.enqueue(() => {
      this.check("BAD_FIELD", "toolstack", TOOLSTACK_RECORD.DISK_WRITE, diskWriteProblem(write));
      return this.record("toolstack", TOOLSTACK_RECORD.DISK_WRITE, { kind: "disk-write" }, [encodeDiskWriteHead(write), write.data]);
    });
  }

  /** DISK_CHECKPOINT (spec §3.11): inside a checkpoint, the last write it covers. */
  writeDiskCheckpoint(checkpoint: DiskCheckpoint): Promise<void> {
    return this.enqueue(() => {
      this.check("BAD_FIELD", "toolstack", TOOLSTACK_RECORD.DISK_CHECKPOINT, diskCheckpointProblem(checkpoint));
      return this.record("toolstack", TOOLSTACK_RECORD.DISK_CHECKPOINT, { kind: "disk-checkpoint" }, [encodeDiskCheckpoint(checkpoint)]);
    });
  }

  /** DISK_INFO (spec §3.12): forward stream, before the first MEMORY_STREAM. */
  writeDiskInfo(info: DiskInfo): Promise<void> {
    return this.enqueue(() => {
      this.check("BAD_FIELD", "toolstack", TOOLSTACK_RECORD.DISK_INFO, diskInfoProblem(info));
      return this.record("toolstack", TOOLSTACK_RECORD.DISK_INFO, { kind: "disk-info" }, [encodeDiskInfo(info)]);
    });
  }

  /** DISK_WANT (spec §3.12): back channel, the chunks to copy. */
  writeDiskWant(want: DiskWant): Promise<void> {
    return this.enqueue(() => {
      this.check("BAD_FIELD", "toolstack", TOOLSTACK_RECORD.DISK_WANT, diskWantProblem(want));
      return this.record("toolstack", TOOLSTACK_RECORD.DISK_WANT, { kind: "disk-want" }, [encodeDiskWant(want)]);
    });
  }

  /** DISK_PLAN (spec §3.16): forward stream, before the first MEMORY_STREAM, instead of the disk's DISK_INFO. */
  writeDiskPlan(plan: DiskPlan): Promise<void> {
    return this.enqueue(() => {
      this.check("BAD_FIELD", "toolstack", TOOLSTACK_RECORD.DISK_PLAN, diskPlanProblem(plan));
      return this.record("toolstack", TOOLSTACK_RECORD.DISK_PLAN, { kind: "disk-plan" }, [encodeDiskPlan(plan)]);
    });
  }

  /** DISK_LOG (spec §3.17): the back channel's first record. */
  writeDiskLog(report: DiskLogReport): Promise<void> {
    return this.enqueue(() => {
      this.check("BAD_FIELD", "toolstack", TOOLSTACK_RECORD.DISK_LOG, diskLogProblem(report));
      return this.record("toolstack", TOOLSTACK_RECORD.DISK_LOG, { kind: "disk-log" }, [encodeDiskLog(report)]);
    });
  }

  /** DISK_SYNCED (spec §3.18): back channel, the images hold a checkpoint durably. */
  writeDiskSynced(synced: DiskSynced): Promise<void> {
    return this.enqueue(() => {
      this.check("BAD_FIELD", "toolstack", TOOLSTACK_RECORD.DISK_SYNCED, diskSyncedProblem(synced));
      return this.record("toolstack", TOOLSTACK_RECORD.DISK_SYNCED, { kind: "disk-synced" }, [encodeDiskSynced(synced)]);
    });
  }

  /** CHECKPOINT_REQUEST (spec §3.13): back channel, the secondary asks for a checkpoint. */
  writeCheckpointRequest(request: CheckpointRequest): Promise<void> {
    return this.enqueue(() => {
      this.check("BAD_FIELD", "toolstack", TOOLSTACK_RECORD.CHECKPOINT_REQUEST, checkpointRequestProblem(request));
      return this.record("toolstack", TOOLSTACK_RECORD.CHECKPOINT_REQUEST, { kind: "checkpoint-request" }, [encodeCheckpointRequest(request)]);
    });
  }

  /** Toolstack END: the stream is complete. */
  writeEnd(): Promise<void> {
    return this.enqueue(() => this.record("toolstack", TOOLSTACK_RECORD.END, { kind: "end" }, []));
  }

  /**
   * What the sink has taken and holds back (a coalescing sink's corked
   * records) leaves for the OS now, without waiting: call it after awaiting
   * a write that must be on its way before this callback's longer work. A
   * failure shows at the next write or flush.
   */
  sendNow(): void {
    this.sink.flush?.().catch(() => undefined);
  }

  /** Resolves when everything issued so far has been handed to the sink and the sink has let it go (ByteSink.flush). */
  flush(): Promise<void> {
    return this.enqueue(async () => {
      await this.sink.flush?.();
    });
  }

  private enqueue(operation: () => Promise<void>): Promise<void> {
    const run = async (): Promise<void> => {
      if (this.failure !== undefined) throw this.failure;
      await operation();
    };
    const result = this.tail.then(run);
    // The queue continues after a rejected call; the caller sees the rejection.
    this.tail = result.catch(() => undefined);
    return result;
  }

  private location(what: string): StreamLocation {
    return { offset: this.written, what };
  }

  private check(code: StreamErrorCode, layer: Layer, type: number, problem: string | undefined): void {
    if (problem !== undefined) throw new StreamError(code, this.location(describeRecord(layer, type)), problem);
  }

  private async record(layer: Layer, type: number, event: SequenceEvent, parts: Uint8Array[]): Promise<void> {
    if (!this.headerAccepted) {
      this.sequence.accept({ kind: "toolstack-header" }, this.location("toolstack header"));
      this.headerAccepted = true;
    }
    // The header goes out with the first record that passes its checks.
    const header = this.headerWritten ? [] : [encodeToolstackHeader()];
    const where = { offset: this.written + (header[0]?.length ?? 0), what: describeRecord(layer, type) };
    const bodyLength = parts.reduce((n, p) => n + p.length, 0);
    const info = recordTypeInfo(layer, type);
    if (info === undefined || bodyLength < info.minBody || bodyLength > info.maxBody) {
      throw new StreamError("BAD_LENGTH", where, `body of ${bodyLength} octets is outside the type's bounds`);
    }
    this.sequence.accept(event, where);
    // The first MEMORY_STREAM is followed by the memory image and machine headers.
    const memoryHeaders: Uint8Array[] = [];
    if (this.sequence.expecting === "memory-headers") {
      const headersAt = { offset: where.offset + RECORD_HEADER_SIZE, what: "machine header" };
      this.sequence.accept({ kind: "machine-header", machine: this.machine }, headersAt);
      memoryHeaders.push(encodeMemoryHeaders(this.machine));
    }
    this.headerWritten = true;
    await this.emit([...header, encodeRecordHeader(type, bodyLength), ...parts, paddingFor(bodyLength), ...memoryHeaders]);
  }

  /** Hand chunks to the sink, merging small neighbours. */
  private async emit(chunks: Uint8Array[]): Promise<void> {
    let pending: Uint8Array[] = [];
    let pendingLength = 0;
    const flushPending = async (): Promise<void> => {
      if (pendingLength === 0) return;
      const merged = pending.length === 1 && pending[0] !== undefined ? pending[0] : concat(pending, pendingLength);
      pending = [];
      pendingLength = 0;
      await this.toSink(merged);
    };
    for (const chunk of chunks) {
      if (chunk.length === 0) continue;
      if (chunk.length >= COALESCE_BELOW) {
        await flushPending();
        await this.toSink(chunk);
      } else {
        pending.push(chunk);
        pendingLength += chunk.length;
      }
    }
    await flushPending();
  }

  private async toSink(chunk: Uint8Array): Promise<void> {
    try {
      await this.sink.write(chunk);
    } catch (err) {
      this.failure =
        err instanceof StreamError
          ? err
          : new StreamError("IO", this.location("sink"), `write failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      throw this.failure;
    }
    this.written += chunk.length;
  }
}

function concat(chunks: Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
