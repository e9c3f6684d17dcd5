/**
 * SysError: every failing system call in src/sys becomes one of these,
 * naming the call, the object it acted on and the errno.
 */
import { errno as lastErrno, errnoNames, strerror } from "./libc.js";

export class SysError extends Error {
  /** The call, with the request for ioctls: "ioctl(TUNSETIFF)", "open(/dev/net/tun)". */
  readonly call: string;
  /** The positive kernel errno (11 for EAGAIN); note Node's own errors use negative numbers. */
  readonly errno: number;
  /** The errno name, "EPERM"; "E<number>" when the name is unknown. */
  readonly code: string;
  /** What the call acted on, e.g. "TAP colo0" or "bridge lanbr (port tap0)"; may be empty. */
  readonly object: string;

  constructor(call: string, errno: number, object = "") {
    const code = errnoNames.get(errno) ?? `E${errno}`;
    super(`${call}${object === "" ? "" : ` for ${object}`} failed: ${code} (${strerror(errno)})`);
    this.name = "SysError";
    this.call = call;
    this.errno = errno;
    this.code = code;
    this.object = object;
  }
}

/** A SysError for the call that just failed on this thread (reads errno now). */
export function sysErrorNow(call: string, object = ""): SysError {
  return new SysError(call, lastErrno(), object);
}

/** True when err is a SysError with the given code. */
export function isSysError(err: unknown, code?: string): err is SysError {
  return err instanceof SysError && (code === undefined || err.code === code);
}
