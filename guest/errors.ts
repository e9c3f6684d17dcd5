/**
 * The guest builder's error type: one `code` per kind of failure, and a
 * message naming the package, file or command concerned.
 */

export type GuestBuildErrorCode =
  /** A host tool (apt-cache, apt-get, dpkg-deb, mkfs.ext4, xz) is missing or failed to start. */
  | "TOOL_MISSING"
  /** apt-cache could not resolve a package or its version. */
  | "RESOLVE_FAILED"
  /** apt-get download failed or did not produce the expected .deb. */
  | "DOWNLOAD_FAILED"
  /** dpkg-deb -x failed. */
  | "UNPACK_FAILED"
  /** A file expected inside an unpacked package is not there. */
  | "FILE_MISSING"
  /** A kernel module is missing, unreadable, or listed before one it depends on. */
  | "MODULE_INVALID"
  /** A shared library a guest binary needs (DT_NEEDED) is in no unpacked package. */
  | "LIBRARY_MISSING"
  /** A guest binary or library is not a well-formed ELF file of the guest's architecture. */
  | "ELF_INVALID"
  /** The kernel image is not one the target can boot: bad bzImage header, a payload compressed otherwise than expected, no PVH entry note. */
  | "KERNEL_INVALID"
  /** The build was about to execute a program from the unpacked guest packages on the host. */
  | "GUEST_CODE_ON_HOST"
  /** A cpio archive could not be written or parsed. */
  | "CPIO_INVALID"
  /** The cached manifest is unreadable (it is then rebuilt, not fatal). */
  | "MANIFEST_INVALID"
  /** The data disk already exists and overwriting was not asked for. */
  | "DISK_EXISTS"
  /** Creating or formatting the data disk failed. */
  | "DISK_FAILED"
  /** A command exited non-zero. */
  | "COMMAND_FAILED"
  /** A caller passed a value the guest cannot use (command-line value, disk size). */
  | "INVALID_OPTION";

export class GuestBuildError extends Error {
  readonly code: GuestBuildErrorCode;

  constructor(code: GuestBuildErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "GuestBuildError";
    this.code = code;
  }
}
