/** Errors of disk replication (COLO-PROTOCOL.md §7); `code` is stable for callers and tests. */
export type DiskReplicationErrorCode =
  | "RANGE" // an access outside the device, or a negative/non-integer offset or length
  | "SEQUENCE" // a forwarded primary write out of order, or a checkpoint seq that went backwards
  | "INCOMPLETE" // a checkpoint names primary writes that have not all arrived
  | "STATE" // an operation not valid now (after failover, after close, sync after checkpoint 0)
  | "SPILL" // the spill file could not be created, written or read
  | "UNDERLYING" // the device below returned a read of the wrong length
  | "LOG"; // an activity log file (activity-log.ts) is unreadable: corrupt, truncated, another version

export class DiskReplicationError extends Error {
  constructor(
    /** What failed: "secondary disk", "primary disk", "extent map <label>", "spill file <path>". */
    readonly subject: string,
    readonly code: DiskReplicationErrorCode,
    message: string,
  ) {
    super(`${subject}: ${message}`);
    this.name = "DiskReplicationError";
  }
}

/** Throws RANGE unless [offset, offset+length) is a valid range inside a device of `byteLength` bytes. */
export function checkRange(subject: string, byteLength: number, offset: number, length: number): void {
  if (
    !Number.isSafeInteger(offset) ||
    !Number.isSafeInteger(length) ||
    offset < 0 ||
    length < 0 ||
    offset + length > byteLength
  ) {
    throw new DiskReplicationError(subject, "RANGE", `access [${offset}, +${length}) outside the ${byteLength}-byte device`);
  }
}
