/**
 * A connected pair of unix stream sockets (socketpair(2)), for a child
 * process that gets one end as an inherited descriptor (QEMU's
 * `-netdev stream,addr.type=fd`), and the count of bytes queued on an end
 * that its reader has not read yet (ioctl FIONREAD on that end).
 *
 * Both ends are created close-on-exec: a child inherits an end only where
 * it is placed explicitly (child_process.spawn's stdio array dup2()s it,
 * which clears the flag on the copy), so unrelated children never hold it.
 */
import { AF_UNIX, FIONREAD, SOCK_CLOEXEC, SOCK_STREAM, close, ioctlPtr, socketpair } from "./libc.js";
import { sysErrorNow } from "./errors.js";

export interface UnixPair {
  /** The end this process reads and writes (wrap it in net.Socket({ fd })). */
  readonly ours: number;
  /** The end for the child; kept open here too, so unreadBytes() can look at its queue. */
  readonly theirs: number;
}

/** socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC). `what` names the pair in errors. */
export function unixStreamPair(what: string): UnixPair {
  const fds = new Int32Array(2);
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) !== 0) throw sysErrorNow("socketpair(AF_UNIX)", what);
  return { ours: fds[0] as number, theirs: fds[1] as number };
}

/** Bytes in `fd`'s receive queue not yet read (FIONREAD; exact for unix stream sockets). */
export function unreadBytes(fd: number, what: string): number {
  const out = new Int32Array(1);
  if (ioctlPtr(fd, FIONREAD, new Uint8Array(out.buffer)) !== 0) throw sysErrorNow("ioctl(FIONREAD)", what);
  return out[0] as number;
}

/** close(2) of an end this process no longer needs (the child keeps its own copy). */
export function closeEnd(fd: number, what: string): void {
  if (close(fd) !== 0) throw sysErrorNow("close", what);
}
