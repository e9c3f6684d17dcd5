/** The public API of src/state: the colo stream format (docs/specs/stream.md). */
export { StreamError, type StreamErrorCode } from "./errors.js";
export { StreamReader, readAll, type ReaderOptions } from "./reader.js";
export { StreamWriter, type WriterOptions } from "./writer.js";
export type { ByteSource } from "./byte-source.js";
export { MemorySink, teeSink, writableSink, type ByteSink } from "./sink.js";
export { verifyStream, type StreamKind, type StreamSummary, type VerifyFailure, type VerifyOptions, type VerifyResult, type RecordTally } from "./verify.js";
export type { StreamRecord, StreamRecordKind } from "./records.js";
export type { Channel } from "./sequence.js";
export { machineHeader, ENGINE_CODE, MAX_MEMORY_BYTES, type MachineHeader, type MachineExpectation } from "./memory-header.js";
export { applyPageData, pageDataFromRam, pageDataFromSnapshot, snapshotPages, isZeroPage, type PageData } from "./page-data.js";
export { PAGE_TYPE } from "./pfn-entry.js";
export { PageBuffer } from "./page-buffer.js";
export { PageStaging, type StagingLease } from "./page-staging.js";
export { writePages, stagePages, writeStagedPages, allPfns, guestBytes, type PageWriteStats, type StagedPages } from "./write-pages.js";
export { unionSortedPfns } from "./pfn-list.js";
export { EMU_STATE_FORMAT, QEMU_STATE_FORMAT, type EngineState } from "./engine-state.js";
export type { EngineCompat } from "./engine-compat-record.js";
export type { LinkTranslationLayers, TranslationEntry } from "./link-translation-record.js";
export { DISK_LOG_FLAG_PRESENT, type DiskLogEntry, type DiskLogReport, type DiskPlan, type DiskSynced } from "./disk-log-records.js";
export { EMULATOR_ID, type EmulatorContext } from "./emulator-context.js";
export { CHECKPOINT_CONTROL_ID, type CheckpointControl } from "./checkpoint-records.js";
export type { PrecopyRound } from "./precopy-round.js";
export { MAX_HEARTBEAT_VALUE, type Heartbeat } from "./heartbeat-record.js";
export type {
  CheckpointRequest,
  CheckpointRequestReason,
  DiskCheckpoint,
  DiskInfo,
  DiskWant,
  DiskWrite,
  NetFrame,
  NetDirection,
  ReplicationMode,
  ReplicationModeName,
} from "./colo-records.js";
export { MAX_DISK_WRITE_DATA } from "./colo-records.js";
export { VM_CONFIG_FORMAT, type VmConfigFormat, type VmConfigInput, type VmConfigRecord } from "./vm-config-record.js";
export {
  MAX_PAGES_PER_RECORD,
  MAX_DIRTY_PFNS_PER_RECORD,
  MAX_BLOB_SIZE,
  MAX_VM_CONFIG_PATH,
  MAX_VM_CONFIG_TEXT,
  MAX_ENGINE_COMPAT_DESCRIPTOR,
  TOOLSTACK_RECORD,
  MEMORY_RECORD,
} from "./record-types.js";
