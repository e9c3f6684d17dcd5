/**
 * Readiness of a file descriptor on Node's own event loop: a libuv uv_poll_t
 * (epoll, level-triggered) made by koffi's `koffi.node.poll`. No thread, no
 * busy loop: the callback runs on the main thread when the fd is readable.
 *
 * An active watcher keeps the process alive like any libuv handle; a stopped
 * or closed one does not. `close()` stops it at once (epoll_ctl DEL happens
 * inside uv_poll_stop), so the fd may be closed right after.
 */
import koffi from "koffi";

/**
 * The callback koffi 3.3.4 really calls: (status, events). Its index.d.ts
 * declares (events) only; the native code (src/koffi/src/uv.cc, OnPoll)
 * passes the libuv status first: 0, or a negative UV_E* code after which
 * libuv has already stopped the watcher (POLLERR on the fd).
 */
type NativePollCallback = (status: number, events: { readable: boolean }) => void;
interface NativePollHandle {
  start(opts: { readable: boolean }, cb: NativePollCallback): void;
  stop(): void;
  close(): void;
}
const nativePoll = koffi.node.poll as unknown as (
  fd: number,
  opts: { readable: boolean },
  cb: NativePollCallback,
) => NativePollHandle | null;

/** Calls `onReadable(status)` each loop iteration while `fd` is readable. */
export class ReadableWatcher {
  private handle: NativePollHandle | null = null;
  private active = false;
  private readonly cb: NativePollCallback;

  constructor(
    private readonly fd: number,
    onReadable: (status: number) => void,
  ) {
    this.cb = (status) => {
      if (status < 0) this.active = false; // libuv stopped the handle
      onReadable(status);
    };
  }

  get running(): boolean {
    return this.active;
  }

  start(): void {
    if (this.active) return;
    if (this.handle === null) {
      const h = nativePoll(this.fd, { readable: true }, this.cb);
      if (h === null) throw new Error(`uv_poll on fd ${this.fd} failed`);
      this.handle = h;
    } else {
      this.handle.start({ readable: true }, this.cb);
    }
    this.active = true;
  }

  stop(): void {
    if (!this.active || this.handle === null) return;
    this.handle.stop();
    this.active = false;
  }

  close(): void {
    this.active = false;
    this.handle?.close();
    this.handle = null;
  }
}
