/**
 * TAP devices: a layer-2 interface whose frames we read and write through
 * /dev/net/tun (linux/if_tun.h, Documentation/networking/tuntap.rst).
 *
 * Reading is event-driven on the main thread: a libuv poll watcher
 * (fdpoll.ts) wakes us when the fd is readable, we drain it with
 * non-blocking read()s (at most READ_BATCH frames per wakeup so an emulator
 * on the same thread keeps running; the watcher is level-triggered and calls
 * again on the next loop iteration) and hand each frame to the listeners.
 */
import { SysError, sysErrorNow } from "./errors.js";
import { ReadableWatcher } from "./fdpoll.js";
import { ifreqFlags, ifreqName, makeIfreq, setIfreqFlags, validateInterfaceName } from "./ifreq.js";
import { O_CLOEXEC, O_NONBLOCK, O_RDWR, close, errno, errnoValue, ioctlPtr, open, read, write } from "./libc.js";
import { elapsedMs, monotonicMs } from "./clock.js";
import { withNetns } from "./netns.js";

/** The clone device (Documentation/networking/tuntap.rst). */
export const TUN_CLONE_DEVICE = "/dev/net/tun";

// linux/if_tun.h
export const TUNSETIFF = 0x400454ca; // _IOW('T', 202, int)
export const TUNGETIFF = 0x800454d2; // _IOR('T', 210, unsigned int)
export const IFF_TUN = 0x0001;
export const IFF_TAP = 0x0002;
export const IFF_MULTI_QUEUE = 0x0100;
export const IFF_PERSIST = 0x0800;
export const IFF_NO_PI = 0x1000;
export const IFF_VNET_HDR = 0x4000;

/** Read buffer: the largest frame a TAP can hand us (64 KiB packet + Ethernet header). */
const READ_BUFFER_BYTES = 65536 + 14;
/** Frames delivered per wakeup before yielding to the event loop. */
export const READ_BATCH = 256;

/** After POLLERR, how long read() may go on answering EAGAIN before the poll error is reported. */
const POLLERR_CAUSE_WAIT_MS = 1000;
const POLLERR_RETRY_MS = 5;

const EAGAIN = errnoValue("EAGAIN");
const EINTR = errnoValue("EINTR");
/** write() errors that drop one frame and leave the device usable. */
const DROP_CODES = new Set(["EAGAIN", "ENOBUFS", "ENOMEM", "EIO", "EINVAL", "EMSGSIZE"]);

export interface TapOptions {
  /** Create the TAP in this named network namespace (`ip netns add`); default: the caller's. */
  netns?: string;
}

export interface TapStats {
  /** Frames delivered to listeners. */
  rxFrames: number;
  rxBytes: number;
  /** Frames written to the kernel. */
  txFrames: number;
  txBytes: number;
  /** Frames write() dropped (sum of txDropsByCode). */
  txDropped: number;
  /** Dropped frames by errno: EAGAIN/ENOBUFS (queue full), EIO (link down), EINVAL (shorter than an Ethernet header), ... */
  txDropsByCode: Readonly<Record<string, number>>;
}

export type FrameListener = (frame: Uint8Array) => void;
export type TapErrorListener = (err: SysError) => void;

export interface TapDevice {
  /** The interface name (as the kernel confirmed it). */
  readonly name: string;
  /** The /dev/net/tun descriptor (O_NONBLOCK, O_CLOEXEC); do not read or close it yourself. */
  readonly fd: number;
  /** The namespace given to openTap, if any. */
  readonly netns: string | undefined;
  /** True when the interface outlives this fd (a pre-existing persistent TAP we attached to). */
  readonly persistent: boolean;
  readonly closed: boolean;
  /** True after pause() (frames wait in the kernel's queue, up to its txqueuelen, then drop there). */
  readonly paused: boolean;
  /**
   * Send one Ethernet frame to the kernel (synchronous). Returns false when
   * the frame was dropped and counted (queue full, link down, malformed);
   * throws SysError when the device is unusable (e.g. EBADFD: it was
   * deleted) and Error after close().
   */
  write(frame: Uint8Array): boolean;
  /**
   * Receive each frame the kernel sends out of the interface. Reading
   * starts with the first listener and stops when the last is removed; until
   * then frames wait in the kernel's queue. Each call gets a fresh copy
   * (shared between listeners of the same frame). Returns the remover.
   */
  onFrame(listener: FrameListener): () => void;
  /**
   * The reader failed (e.g. the interface was deleted: read() gives
   * EBADFD); it has stopped. With no error listener the SysError is thrown
   * from the event loop (an uncaught exception), like an EventEmitter's.
   */
  onError(listener: TapErrorListener): () => void;
  /** Stop reading (nothing is lost: frames queue in the kernel). */
  pause(): void;
  resume(): void;
  stats(): TapStats;
  /** Frames write() dropped so far (stats().txDropped). */
  readonly droppedWrites: number;
  /**
   * Stop the reader and close the fd (idempotent). No listener is called
   * afterwards and nothing of the TAP keeps the process alive. A TAP we
   * created disappears from the system here (non-persistent).
   */
  close(): void;
}

/**
 * Open (create, or attach to an unused persistent) TAP `name`: /dev/net/tun
 * with O_RDWR|O_NONBLOCK|O_CLOEXEC, TUNSETIFF with IFF_TAP|IFF_NO_PI (no
 * vnet header). The link is left down: see setLinkUp (netif.ts).
 * Throws RangeError for an invalid name (before any system call), SysError
 * otherwise: EPERM without CAP_NET_ADMIN, EINVAL when `name` is an
 * interface that is not a TAP, EBUSY when another fd holds the TAP.
 */
export function openTap(name: string, opts: TapOptions = {}): TapDevice {
  validateInterfaceName(name, "TAP");
  const object = `TAP ${name}${opts.netns === undefined ? "" : ` in netns ${opts.netns}`}`;
  return withNetns(opts.netns, () => {
    const fd = open(TUN_CLONE_DEVICE, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) throw sysErrorNow(`open(${TUN_CLONE_DEVICE})`, object);
    try {
      const ifr = makeIfreq(name, "TAP");
      setIfreqFlags(ifr, IFF_TAP | IFF_NO_PI);
      if (ioctlPtr(fd, TUNSETIFF, ifr) < 0) throw sysErrorNow("ioctl(TUNSETIFF)", object);
      const got = makeIfreq(name, "TAP");
      if (ioctlPtr(fd, TUNGETIFF, got) < 0) throw sysErrorNow("ioctl(TUNGETIFF)", object);
      const flags = ifreqFlags(got);
      const actual = ifreqName(got);
      if (actual !== name || (flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_TUN)) !== (IFF_TAP | IFF_NO_PI)) {
        throw new Error(`TUNSETIFF for ${object} gave ${actual} with flags 0x${flags.toString(16)}, expected IFF_TAP|IFF_NO_PI`);
      }
      return new Tap(name, fd, opts.netns, (flags & IFF_PERSIST) !== 0, object);
    } catch (err) {
      close(fd);
      throw err;
    }
  });
}

class Tap implements TapDevice {
  private isClosed = false;
  private isPaused = false;
  private failure: SysError | null = null;
  private readonly frameListeners = new Set<FrameListener>();
  private readonly errorListeners = new Set<TapErrorListener>();
  private readonly watcher: ReadableWatcher;
  private readonly buf = new Uint8Array(READ_BUFFER_BYTES);
  private readonly counters = { rxFrames: 0, rxBytes: 0, txFrames: 0, txBytes: 0, txDropped: 0 };
  private readonly drops: Record<string, number> = {};

  constructor(
    readonly name: string,
    readonly fd: number,
    readonly netns: string | undefined,
    readonly persistent: boolean,
    private readonly object: string,
  ) {
    this.watcher = new ReadableWatcher(fd, (status) => this.readable(status));
  }

  get closed(): boolean {
    return this.isClosed;
  }

  get paused(): boolean {
    return this.isPaused;
  }

  write(frame: Uint8Array): boolean {
    if (this.isClosed) throw new Error(`write to ${this.object} after close()`);
    const n = write(this.fd, frame, frame.byteLength);
    if (n >= 0) {
      this.counters.txFrames++;
      this.counters.txBytes += n;
      return true;
    }
    const err = sysErrorNow("write", this.object);
    if (!DROP_CODES.has(err.code)) throw err;
    this.counters.txDropped++;
    this.drops[err.code] = (this.drops[err.code] ?? 0) + 1;
    return false;
  }

  onFrame(listener: FrameListener): () => void {
    if (this.isClosed) throw new Error(`onFrame on ${this.object} after close()`);
    this.frameListeners.add(listener);
    this.update();
    return () => {
      this.frameListeners.delete(listener);
      this.update();
    };
  }

  onError(listener: TapErrorListener): () => void {
    this.errorListeners.add(listener);
    return () => this.errorListeners.delete(listener);
  }

  pause(): void {
    this.isPaused = true;
    this.update();
  }

  resume(): void {
    this.isPaused = false;
    this.update();
  }

  get droppedWrites(): number {
    return this.counters.txDropped;
  }

  stats(): TapStats {
    return { ...this.counters, txDropsByCode: { ...this.drops } };
  }

  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.watcher.close();
    this.frameListeners.clear();
    this.errorListeners.clear();
    close(this.fd);
  }

  private get wantsFrames(): boolean {
    return !this.isClosed && !this.isPaused && this.failure === null && this.frameListeners.size > 0;
  }

  private update(): void {
    if (this.isClosed) return;
    if (this.wantsFrames) this.watcher.start();
    else this.watcher.stop();
  }

  private readable(status: number): void {
    for (let i = 0; i < READ_BATCH && this.wantsFrames; i++) {
      const n = read(this.fd, this.buf, this.buf.byteLength);
      if (n < 0) {
        const e = errno();
        if (e === EINTR) continue;
        if (e === EAGAIN && status >= 0) return;
        if (e === EAGAIN) {
          // status < 0: libuv saw POLLERR and stopped the watcher. tun_chr_poll
          // reports EPOLLERR as soon as the netdev leaves NETREG_REGISTERED,
          // while read() still finds the queue attached (EAGAIN) until the
          // detach a moment later gives EBADFD: ask read() again for the cause.
          this.awaitCause(status, monotonicMs());
          return;
        }
        this.fail(new SysError("read", e, this.object));
        return;
      }
      const frame = this.buf.slice(0, n);
      this.counters.rxFrames++;
      this.counters.rxBytes += n;
      for (const l of this.frameListeners) l(frame);
    }
  }

  /**
   * After POLLERR with read() still EAGAIN: retry read() every
   * POLLERR_RETRY_MS until it names the cause, for at most
   * POLLERR_CAUSE_WAIT_MS (monotonic); then the poll error itself is reported.
   */
  private awaitCause(status: number, since: number): void {
    const timer = setTimeout(() => {
      if (!this.wantsFrames) return;
      const n = read(this.fd, this.buf, this.buf.byteLength);
      if (n >= 0) {
        const frame = this.buf.slice(0, n);
        this.counters.rxFrames++;
        this.counters.rxBytes += n;
        for (const l of this.frameListeners) l(frame);
        this.awaitCause(status, since);
        return;
      }
      const e = errno();
      if (e !== EAGAIN && e !== EINTR) this.fail(new SysError("read", e, this.object));
      else if (elapsedMs(since) < POLLERR_CAUSE_WAIT_MS) this.awaitCause(status, since);
      else this.fail(new SysError("poll", -status, this.object));
    }, POLLERR_RETRY_MS);
    timer.unref();
  }

  private fail(err: SysError): void {
    this.failure = err;
    this.watcher.stop();
    if (this.errorListeners.size === 0) throw err;
    for (const l of this.errorListeners) l(err);
  }
}
