/** Errors of the VM layer; `code` is stable for callers and tests. */
export type VmErrorCode =
  | "KERNEL" // kernel or ramdisk missing/unreadable
  | "DISK" // disk image missing, unreadable, or of a bad size
  | "NIC" // TAP or bridge setup failed
  | "ENGINE" // the engine refused the machine or failed
  | "STATE"; // operation not valid in the VM's current state

export class VmError extends Error {
  constructor(
    readonly vm: string,
    readonly code: VmErrorCode,
    message: string,
  ) {
    super(`vm ${vm}: ${message}`);
    this.name = "VmError";
  }
}
