/**
 * The typed records a StreamReader yields, one per header or record of
 * docs/specs/stream.md. `offset` is where the record starts in the stream.
 */
import type { CheckpointControl } from "./checkpoint-records.js";
import type { EmulatorContext } from "./emulator-context.js";
import type { EngineCompat } from "./engine-compat-record.js";
import type { EngineState } from "./engine-state.js";
import type { MachineHeader } from "./memory-header.js";
import type { PageData } from "./page-data.js";
import type { PrecopyRound } from "./precopy-round.js";
import type { Heartbeat } from "./heartbeat-record.js";
import type { TranslationEntry } from "./link-translation-record.js";
import type { DiskLogReport, DiskPlan, DiskSynced } from "./disk-log-records.js";
import type { Layer } from "./record-types.js";
import type { VmConfigRecord } from "./vm-config-record.js";
import type { CheckpointRequest, DiskCheckpoint, DiskInfo, DiskWant, DiskWrite, NetFrame, ReplicationMode } from "./colo-records.js";

export type StreamRecord =
  /** Toolstack VM_CONFIG: the VM's configuration file (image streams, before the first MEMORY_STREAM). */
  | { kind: "vm-config"; offset: number; config: VmConfigRecord }
  /**
   * Toolstack ENGINE_COMPAT (optional): the sending engine and what the receiving engine must match
   * (image streams, before the first MEMORY_STREAM); the receiver compares it (spec §3.14).
   */
  | { kind: "engine-compat"; offset: number; compat: EngineCompat }
  /** Toolstack MEMORY_STREAM: a memory part begins. */
  | { kind: "memory-stream"; offset: number }
  /** The memory image and machine headers (after the first MEMORY_STREAM only). */
  | { kind: "machine-header"; offset: number; machine: MachineHeader }
  | { kind: "page-data"; offset: number; pages: PageData }
  /** EMU_STATE or QEMU_STATE: the record of the machine header's engine. */
  | { kind: "engine-state"; offset: number; state: EngineState }
  | { kind: "precopy-round"; offset: number; round: PrecopyRound }
  | { kind: "dirty-pfn-list"; offset: number; pfns: Uint32Array }
  /** Memory CHECKPOINT: the memory part is complete and consistent; toolstack records follow. */
  | { kind: "checkpoint"; offset: number }
  /** Memory END: the memory stream is complete. */
  | { kind: "memory-end"; offset: number }
  | { kind: "emulator-context"; offset: number; context: EmulatorContext }
  | { kind: "checkpoint-end"; offset: number }
  | { kind: "checkpoint-state"; offset: number; control: CheckpointControl }
  /** Toolstack HEARTBEAT: replication control, both directions of COLO (spec §3.7); the sequence increases per stream. */
  | { kind: "heartbeat"; offset: number; heartbeat: Heartbeat }
  /** COLO compare mode and disk replication (spec §3.8-§3.13). */
  | { kind: "replication-mode"; offset: number; mode: ReplicationMode }
  | { kind: "net-frame"; offset: number; net: NetFrame }
  | { kind: "disk-write"; offset: number; write: DiskWrite }
  | { kind: "disk-checkpoint"; offset: number; checkpoint: DiskCheckpoint }
  | { kind: "disk-info"; offset: number; info: DiskInfo }
  | { kind: "disk-want"; offset: number; want: DiskWant }
  | { kind: "checkpoint-request"; offset: number; request: CheckpointRequest }
  /** A survivor's link translations, outermost layer first (spec §3.15). */
  | { kind: "link-translation"; offset: number; layers: TranslationEntry[][] }
  /** Re-protection by activity logs (spec §3.16-§3.18). */
  | { kind: "disk-plan"; offset: number; plan: DiskPlan }
  | { kind: "disk-log"; offset: number; report: DiskLogReport }
  | { kind: "disk-synced"; offset: number; synced: DiskSynced }
  /** Toolstack END: the stream is complete; the reader reads no further. */
  | { kind: "end"; offset: number }
  /** An optional record this reader does not know, skipped without reading its body into memory. */
  | { kind: "skipped"; offset: number; layer: Layer; type: number; bodyLength: number };

export type StreamRecordKind = StreamRecord["kind"];
