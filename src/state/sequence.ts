/**
 * The stream's grammar (docs/specs/stream.md §6), as one state machine used
 * by both the reader (to reject records out of order) and the writer (so
 * that nothing out of order ever leaves). It knows which layer comes next,
 * the machine, which memory part is open, the coverage of the first image,
 * and which checkpoint is open.
 */
import { StreamError, type StreamLocation } from "./errors.js";
import type { CheckpointControl } from "./checkpoint-records.js";
import type { MachineHeader } from "./memory-header.js";
import type { EngineId } from "../engine/engine.js";

/** An image stream carries a machine (save, migration, COLO forward); the back channel carries the SVM's answers. */
export type Channel = "image" | "back-channel";

/** What comes next in the stream. */
export type Expecting = "toolstack-header" | "toolstack-record" | "memory-headers" | "memory-record" | "done";

export type SequenceEvent =
  | { kind: "toolstack-header" }
  | { kind: "vm-config" }
  | { kind: "engine-compat"; engineId: EngineId }
  | { kind: "memory-stream" }
  | { kind: "machine-header"; machine: MachineHeader }
  | { kind: "page-data"; pfns: Uint32Array }
  | { kind: "engine-state" }
  | { kind: "precopy-round" }
  | { kind: "dirty-pfn-list"; pfns: Uint32Array }
  | { kind: "checkpoint" }
  | { kind: "memory-end" }
  | { kind: "emulator-context"; emulatorId: number; index: number }
  | { kind: "checkpoint-end" }
  | { kind: "checkpoint-state"; control: CheckpointControl }
  | { kind: "heartbeat"; sequence: number }
  | { kind: "replication-mode" }
  | { kind: "net-frame"; direction: "mirrored-input" | "secondary-output" }
  | { kind: "disk-write" }
  | { kind: "disk-checkpoint" }
  | { kind: "disk-info" }
  | { kind: "disk-want" }
  | { kind: "checkpoint-request" }
  | { kind: "link-translation" }
  | { kind: "disk-plan" }
  | { kind: "disk-log" }
  | { kind: "disk-synced" }
  | { kind: "end" }
  /** An optional record this side does not know (skipped). */
  | { kind: "unknown-optional" };

interface MemoryPart {
  /** 0 for the first part of the stream. */
  readonly index: number;
  engineStateSeen: boolean;
  /** Last pfn of the part's dirty list so far (-1: none). */
  lastDirtyPfn: number;
}

export class StreamSequence {
  private phase: Expecting = "toolstack-header";
  private machineHeader: MachineHeader | undefined;
  private part: MemoryPart | undefined;
  private partsOpened = 0;
  private firstPartClosed = false;
  private memoryFinished = false;
  /** A memory part ended with CHECKPOINT; CHECKPOINT_END has not come yet (image streams). */
  private checkpointOpen = false;
  /** A memory part closed and its snapshot not yet ended by CHECKPOINT_END or END: EMULATOR_CONTEXT may come. */
  private snapshotOpen = false;
  private readonly emulatorsInSnapshot = new Set<string>();
  /** After NEW: the next mandatory record must be MEMORY_STREAM. */
  private memoryStreamDue = false;
  /** Pages of the first part seen so far, one bit per pfn (image streams). */
  private coverage: Uint8Array | undefined;
  private covered = 0;
  private vmConfigSeen = false;
  /** The engine ENGINE_COMPAT named (undefined: none yet); the machine header must name the same. */
  private compatEngine: EngineId | undefined;
  private replicationModeSeen = false;
  private linkTranslationSeen = false;
  /** Sequence of the stream's last HEARTBEAT (-1: none yet). */
  private lastHeartbeat = -1;
  /** A record (any, after the toolstack header) was accepted: DISK_LOG may only be the first. */
  private recordSeen = false;

  constructor(readonly channel: Channel) {}

  get expecting(): Expecting {
    return this.phase;
  }

  get machine(): MachineHeader | undefined {
    return this.machineHeader;
  }

  /** Last pfn of the open part's dirty list (-1 when none yet): dirty lists continue ascending. */
  get lastDirtyPfn(): number {
    return this.part?.lastDirtyPfn ?? -1;
  }

  /** Sequence of the stream's last HEARTBEAT (-1 when none yet): the next one must be greater. */
  get lastHeartbeatSequence(): number {
    return this.lastHeartbeat;
  }

  /** The engine the stream's ENGINE_COMPAT named, if one came: the machine header must name it too (spec §3.14). */
  get engineCompatEngine(): EngineId | undefined {
    return this.compatEngine;
  }

  /** Whether the stream's first memory part is closed: a complete machine was sent. */
  get complete(): boolean {
    return this.firstPartClosed;
  }

  /** Accept the next header or record, or throw the StreamError that rejects it. */
  accept(event: SequenceEvent, where: StreamLocation): void {
    const fail = (detail: string): never => {
      throw new StreamError("OUT_OF_ORDER", where, detail);
    };
    const image = this.channel === "image";

    if (event.kind === "toolstack-header") {
      if (this.phase !== "toolstack-header") fail("a second toolstack header");
      this.phase = "toolstack-record";
      return;
    }
    const first = !this.recordSeen;
    this.recordSeen = true;
    if (event.kind === "disk-log") {
      if (image) fail("DISK_LOG belongs to the back channel");
      if (!first) fail("DISK_LOG after another record (it is the back channel's first)");
    }
    if (event.kind === "machine-header") {
      if (this.phase !== "memory-headers") fail("machine header outside the first MEMORY_STREAM");
      this.machineHeader = event.machine;
      if (image) this.coverage = new Uint8Array(Math.ceil(event.machine.pageCount / 8));
      this.phase = "memory-record";
      return;
    }
    if (event.kind === "unknown-optional") {
      if (this.phase !== "toolstack-record" && this.phase !== "memory-record") fail("a record where a header is due");
      return;
    }

    if (this.phase === "toolstack-header") fail("the stream must begin with the toolstack header");
    if (this.phase === "done") fail("a record after the toolstack END");
    if (this.phase === "memory-headers") fail("a record where the memory headers are due");

    if (this.phase === "memory-record") {
      this.acceptMemory(event, fail, image);
      return;
    }
    this.acceptToolstack(event, fail, image);
  }

  private acceptMemory(event: SequenceEvent, fail: (detail: string) => never, image: boolean): void {
    const part = this.part;
    if (part === undefined) return fail("a memory record outside a memory part");
    switch (event.kind) {
      case "page-data":
        if (!image) fail("PAGE_DATA on the back channel");
        if (part.engineStateSeen) fail("PAGE_DATA after the engine state of this memory part");
        if (part.index === 0) this.cover(event.pfns);
        return;
      case "precopy-round":
        if (!image) fail("PRECOPY_ROUND on the back channel");
        if (part.engineStateSeen) fail("PRECOPY_ROUND after the engine state of this memory part");
        return;
      case "engine-state":
        if (!image) fail("engine state on the back channel");
        if (part.engineStateSeen) fail("a second engine state in one memory part");
        part.engineStateSeen = true;
        return;
      case "dirty-pfn-list":
        if (image) fail("CHECKPOINT_DIRTY_PFN_LIST belongs to the back channel");
        part.lastDirtyPfn = event.pfns.length > 0 ? (event.pfns[event.pfns.length - 1] ?? -1) : part.lastDirtyPfn;
        return;
      case "checkpoint":
      case "memory-end":
        if (event.kind === "memory-end" && !image) fail("memory END on the back channel");
        if (image) {
          if (!part.engineStateSeen) fail(`${event.kind === "checkpoint" ? "CHECKPOINT" : "END"} before the engine state`);
          if (part.index === 0) this.checkCoverage(fail);
        }
        this.part = undefined;
        this.firstPartClosed = true;
        this.phase = "toolstack-record";
        if (event.kind === "memory-end") this.memoryFinished = true;
        if (image) {
          this.snapshotOpen = true;
          this.emulatorsInSnapshot.clear();
          this.checkpointOpen = event.kind === "checkpoint";
          this.linkTranslationSeen = false;
        }
        return;
      default:
        return fail(`${event.kind} inside a memory part`);
    }
  }

  private acceptToolstack(event: SequenceEvent, fail: (detail: string) => never, image: boolean): void {
    if (this.memoryStreamDue && event.kind !== "memory-stream") fail("CHECKPOINT_STATE NEW must be followed by MEMORY_STREAM");
    switch (event.kind) {
      case "vm-config":
        if (!image) fail("VM_CONFIG on the back channel");
        if (this.partsOpened > 0) fail("VM_CONFIG after the first MEMORY_STREAM (it belongs right after the toolstack header)");
        if (this.vmConfigSeen) fail("a second VM_CONFIG");
        this.vmConfigSeen = true;
        return;
      case "engine-compat":
        if (!image) fail("ENGINE_COMPAT on the back channel");
        if (this.partsOpened > 0) fail("ENGINE_COMPAT after the first MEMORY_STREAM (it belongs before the memory, next to VM_CONFIG)");
        if (this.compatEngine !== undefined) fail("a second ENGINE_COMPAT");
        this.compatEngine = event.engineId;
        return;
      case "memory-stream":
        if (this.memoryFinished) fail("MEMORY_STREAM after the memory END");
        if (this.checkpointOpen) fail("MEMORY_STREAM while a checkpoint awaits its CHECKPOINT_END");
        if (image && this.firstPartClosed && !this.memoryStreamDue) fail("a checkpoint's MEMORY_STREAM must follow CHECKPOINT_STATE NEW");
        this.memoryStreamDue = false;
        this.snapshotOpen = false;
        this.part = { index: this.partsOpened, engineStateSeen: false, lastDirtyPfn: -1 };
        this.partsOpened++;
        this.phase = this.machineHeader === undefined ? "memory-headers" : "memory-record";
        return;
      case "emulator-context": {
        if (!image) fail("EMULATOR_CONTEXT on the back channel");
        if (!this.snapshotOpen) fail("EMULATOR_CONTEXT outside a snapshot (it follows a memory part's CHECKPOINT or END)");
        const key = `${event.emulatorId}/${event.index}`;
        if (this.emulatorsInSnapshot.has(key)) fail(`a second EMULATOR_CONTEXT for emulator ${key} in one snapshot`);
        this.emulatorsInSnapshot.add(key);
        return;
      }
      case "checkpoint-end":
        if (!image) fail("CHECKPOINT_END on the back channel");
        if (!this.checkpointOpen) fail("CHECKPOINT_END without a memory CHECKPOINT before it");
        this.checkpointOpen = false;
        this.snapshotOpen = false;
        return;
      case "checkpoint-state":
        if (image) {
          if (event.control !== "NEW") fail(`${event.control} belongs to the back channel`);
          if (!this.firstPartClosed || this.memoryFinished) fail("CHECKPOINT_STATE NEW outside a COLO stream (needs a first memory part closed by CHECKPOINT)");
          if (this.checkpointOpen) fail("CHECKPOINT_STATE NEW while a checkpoint awaits its CHECKPOINT_END");
          this.memoryStreamDue = true;
          this.snapshotOpen = false;
        } else if (event.control === "NEW") {
          fail("NEW belongs to the forward stream");
        }
        return;
      case "heartbeat":
        // Image streams: exactly where NEW may come (memoryStreamDue was checked above). Back channel: anywhere here.
        if (image) {
          if (!this.firstPartClosed || this.memoryFinished) fail("HEARTBEAT outside a COLO stream (needs a first memory part closed by CHECKPOINT)");
          if (this.checkpointOpen) fail("HEARTBEAT while a checkpoint awaits its CHECKPOINT_END");
        }
        this.lastHeartbeat = event.sequence;
        return;
      case "replication-mode":
        if (!image) fail("REPLICATION_MODE on the back channel");
        if (this.partsOpened > 0) fail("REPLICATION_MODE after the first MEMORY_STREAM");
        if (this.replicationModeSeen) fail("a second REPLICATION_MODE");
        this.replicationModeSeen = true;
        return;
      case "link-translation":
        // Once before the memory, and once per checkpoint (its refresh, applied with the checkpoint).
        if (!image) fail("LINK_TRANSLATION on the back channel");
        if (this.partsOpened > 0 && !this.checkpointOpen) fail("LINK_TRANSLATION after the first MEMORY_STREAM, outside a checkpoint");
        if (this.linkTranslationSeen) fail(this.partsOpened > 0 ? "a second LINK_TRANSLATION in one checkpoint" : "a second LINK_TRANSLATION");
        this.linkTranslationSeen = true;
        return;
      case "disk-info":
        if (!image) fail("DISK_INFO on the back channel");
        if (this.partsOpened > 0) fail("DISK_INFO after the first MEMORY_STREAM");
        return;
      case "disk-want":
        if (image) fail("DISK_WANT belongs to the back channel");
        return;
      case "disk-plan":
        if (!image) fail("DISK_PLAN on the back channel");
        if (this.partsOpened > 0) fail("DISK_PLAN after the first MEMORY_STREAM");
        return;
      case "disk-log":
        return;
      case "disk-synced":
        if (image) fail("DISK_SYNCED belongs to the back channel");
        return;
      case "checkpoint-request":
        if (image) fail("CHECKPOINT_REQUEST belongs to the back channel");
        return;
      case "disk-write":
        if (!image) fail("DISK_WRITE on the back channel");
        if (this.memoryFinished) fail("DISK_WRITE after the memory END");
        return;
      case "disk-checkpoint":
        if (!image) fail("DISK_CHECKPOINT on the back channel");
        if (!this.checkpointOpen) fail("DISK_CHECKPOINT outside a checkpoint (it comes between CHECKPOINT and CHECKPOINT_END)");
        return;
      case "net-frame":
        if (image) {
          if (event.direction !== "mirrored-input") fail("a secondary-output NET_FRAME on the forward stream");
          if (!this.firstPartClosed || this.memoryFinished) fail("NET_FRAME outside a COLO stream (needs a first memory part closed by CHECKPOINT)");
          if (this.checkpointOpen) fail("NET_FRAME while a checkpoint awaits its CHECKPOINT_END");
        } else if (event.direction !== "secondary-output") {
          fail("a mirrored-input NET_FRAME on the back channel");
        }
        return;
      case "end":
        if (image) {
          if (!this.firstPartClosed) fail("END before any complete memory part");
          if (this.checkpointOpen) fail("END while a checkpoint awaits its CHECKPOINT_END");
        }
        this.phase = "done";
        return;
      default:
        return fail(`${event.kind} in the toolstack layer`);
    }
  }

  private cover(pfns: Uint32Array): void {
    const bits = this.coverage;
    if (bits === undefined) return;
    for (const pfn of pfns) {
      const byte = pfn >>> 3;
      const mask = 1 << (pfn & 7);
      const current = bits[byte] ?? 0;
      if ((current & mask) === 0) {
        bits[byte] = current | mask;
        this.covered++;
      }
    }
  }

  private checkCoverage(fail: (detail: string) => never): void {
    const machine = this.machineHeader;
    const bits = this.coverage;
    if (machine === undefined || bits === undefined || this.covered === machine.pageCount) {
      this.coverage = undefined;
      return;
    }
    let firstMissing = 0;
    while (((bits[firstMissing >>> 3] ?? 0) & (1 << (firstMissing & 7))) !== 0) firstMissing++;
    fail(`the first memory part sent ${this.covered} of ${machine.pageCount} pages (pfn ${firstMissing} missing): not a complete image`);
  }
}
