/** Errors of the QEMU process owner; `code` is stable for callers and tests. */
export type QemuProcessErrorCode =
  | "BAD_SPEC" // the typed description cannot be turned into a command line
  | "RUN_DIR" // the per-VM run directory cannot be made, or a name in it is invalid
  | "BINARY_MISSING" // the QEMU binary (or setpriv) is not there or not executable
  | "START_FAILED" // QEMU could not be spawned, or exited before its QMP socket was ready
  | "START_TIMEOUT" // QMP not ready within the start timeout
  | "QMP_FAILED" // the QMP greeting, negotiation or the command probe failed
  | "VERSION_TOO_OLD" // the QMP greeting names a QEMU older than we support
  | "STATE"; // an operation not valid in the owner's current state

/** Messages name the VM and, where it matters, the binary and QEMU's own words. */
export class QemuProcessError extends Error {
  constructor(
    readonly vm: string,
    readonly code: QemuProcessErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "QemuProcessError";
  }
}
