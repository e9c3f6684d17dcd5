/**
 * A kernel write log of a range of this process's memory: userfaultfd
 * write-protection in asynchronous mode (UFFD_FEATURE_WP_ASYNC, Linux 6.7)
 * read and re-armed by the PAGEMAP_SCAN ioctl of /proc/self/pagemap (also
 * 6.7). A write to a protected page does not fault to anyone: the kernel
 * lifts the protection and the page shows as written; one PAGEMAP_SCAN
 * with PM_SCAN_WP_MATCHING lists the written pages and protects them again
 * in the same walk, so a write racing the scan is either listed now or
 * next time, never lost. Measured here (kernel 6.18): 1000 written pages
 * of 160 MiB listed and re-armed in 0.05-0.2 ms, of 512 MiB in 0.2-0.35 ms,
 * against 20 ms for comparing 160 MiB with a shadow copy.
 *
 * openWriteLog: guest RAM that lives in this process (emu: v86's wasm
 * memory). openProcessWriteLog: guest RAM another process writes through
 * its own page tables (QEMU), on the userfaultfd that process made. Both
 * answer why not when the kernel lacks it (older than 6.7, no userfaultfd,
 * not permitted); callers fall back to comparing.
 *
 * Constants: linux/userfaultfd.h and linux/fs.h of Linux 6.7 (Debian 12's
 * headers are older), the same on x86-64 and arm64.
 */
import { sysErrorNow } from "./errors.js";
import { MADV_NOHUGEPAGE, O_CLOEXEC, O_NONBLOCK, O_RDONLY, O_RDWR, addressOf, close, ioctlInt, ioctlPtr, madvise, open, pidfdGetfd, pidfdOpen } from "./libc.js";

const HOST_PAGE = 4096;
// linux/userfaultfd.h
const USERFAULTFD_IOC_NEW = 0xaa00; // _IO(0xAA, 0x00), on /dev/userfaultfd
const UFFD_API = 0xaa;
const UFFDIO_API = 0xc018aa3f; // _IOWR(0xAA, 0x3F, struct uffdio_api)
const UFFDIO_REGISTER = 0xc020aa00; // _IOWR(0xAA, 0x00, struct uffdio_register)
const UFFDIO_WRITEPROTECT = 0xc018aa06; // _IOWR(0xAA, 0x06, struct uffdio_writeprotect)
const UFFDIO_REGISTER_MODE_WP = 1 << 1;
const UFFDIO_WRITEPROTECT_MODE_WP = 1 << 0;
const UFFD_FEATURE_WP_HUGETLBFS_SHMEM = 1 << 12;
const UFFD_FEATURE_WP_UNPOPULATED = 1 << 13;
const UFFD_FEATURE_WP_ASYNC = 1 << 15;
// linux/fs.h
const PAGEMAP_SCAN = 0xc0606610; // _IOWR('f', 16, struct pm_scan_arg)
const PM_SCAN_WP_MATCHING = 1 << 0;
const PM_SCAN_CHECK_WPASYNC = 1 << 1;
const PAGE_IS_WRITTEN = 1 << 1;
const PM_SCAN_ARG_BYTES = 96;
const PAGE_REGION_BYTES = 24;
/** Regions one scan call returns at most (then it goes on from walk_end). */
const SCAN_REGIONS = 4096;

/** The address of `bytes`' first byte (where the kernel sees it). */
export function bufferAddress(bytes: Uint8Array): bigint {
  return addressOf(bytes);
}

export interface WriteLog {
  /** The address the log covers (the first byte of the buffer it was opened on). */
  readonly address: bigint;
  readonly length: number;
  /**
   * Indexes of the 4 KiB pages of the buffer written since the last call
   * (or since open), sorted; the log is re-armed for them. A buffer that
   * does not start on a page boundary has its pages straddle two of the
   * host's: a written host page reports both.
   */
  takeWritten(): Uint32Array;
  close(): void;
}

function u64s(n: number): { bytes: Uint8Array; view: DataView } {
  const bytes = new Uint8Array(8 * n);
  return { bytes, view: new DataView(bytes.buffer) };
}

/** A write log of `bytes` (its memory must stay where it is), or why the kernel gives none. */
export function openWriteLog(bytes: Uint8Array): WriteLog | { unavailable: string } {
  if (process.arch !== "x64" && process.arch !== "arm64") return { unavailable: `not on ${process.arch}` };
  const address = addressOf(bytes);
  const start = (address / BigInt(HOST_PAGE)) * BigInt(HOST_PAGE);
  const end = ((address + BigInt(bytes.length) + BigInt(HOST_PAGE - 1)) / BigInt(HOST_PAGE)) * BigInt(HOST_PAGE);
  const dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
  if (dev < 0) return { unavailable: sysErrorNow("open", "/dev/userfaultfd").message };
  const uffd = ioctlInt(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
  const newError = uffd < 0 ? sysErrorNow("ioctl(USERFAULTFD_IOC_NEW)", "/dev/userfaultfd").message : undefined;
  close(dev);
  if (newError !== undefined || uffd < 0) return { unavailable: newError ?? "no userfaultfd" };
  // Huge pages would be listed (and re-armed) 2 MiB at a time: 512 pages dirty for one write.
  madvise(start, Number(end - start), MADV_NOHUGEPAGE);
  return arm(uffd, "/proc/self/pagemap", "guest RAM", { address, length: bytes.length, start, end });
}

/**
 * A write log of another process's mapping [start, start + length), page
 * aligned (QEMU's guest RAM), on the userfaultfd that process made for its
 * own memory (a userfaultfd covers the memory of the process that created
 * it, whoever holds it: src/engine/qemu/write-log-preload.c makes QEMU
 * create one at startup). `uffdFd` is that descriptor's number in the
 * process; we take a copy (pidfd_getfd, Linux 5.6; the right to ptrace it).
 * Pages are listed from `start`. Writes by other processes to the same
 * shared memory (ours, through our own mapping) are not in this log.
 */
export function openProcessWriteLog(pid: number, uffdFd: number, start: bigint, length: number): WriteLog | { unavailable: string } {
  if (process.arch !== "x64" && process.arch !== "arm64") return { unavailable: `not on ${process.arch}` };
  if (start % BigInt(HOST_PAGE) !== 0n || length % HOST_PAGE !== 0) throw new RangeError(`mapping ${start.toString(16)}+${length} is not page aligned`);
  const what = `memory of process ${pid}`;
  const pidfd = pidfdOpen(pid);
  if (pidfd < 0) return { unavailable: sysErrorNow("pidfd_open", `process ${pid}`).message };
  const uffd = pidfdGetfd(pidfd, uffdFd);
  const getError = uffd < 0 ? sysErrorNow(`pidfd_getfd(${uffdFd})`, `process ${pid}`).message : undefined;
  close(pidfd);
  if (getError !== undefined || uffd < 0) return { unavailable: getError ?? "no userfaultfd" };
  return arm(uffd, `/proc/${pid}/pagemap`, what, { address: start, length, start, end: start + BigInt(length) });
}

interface Range {
  /** The first byte of what pages are counted from. */
  address: bigint;
  length: number;
  /** Host pages covering [address, address + length). */
  start: bigint;
  end: bigint;
}

/** Asks `uffd` for async write-protection of the range, protects it, and scans `pagemapPath`; closes uffd when it fails. */
function arm(uffd: number, pagemapPath: string, what: string, range: Range): WriteLog | { unavailable: string } {
  const { address, start, end } = range;
  let pagemap = -1;
  const fail = (call: string): { unavailable: string } => {
    const message = sysErrorNow(call, what).message;
    close(uffd);
    if (pagemap >= 0) close(pagemap);
    return { unavailable: message };
  };
  const api = u64s(3);
  api.view.setBigUint64(0, BigInt(UFFD_API), true);
  api.view.setBigUint64(8, BigInt(UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_WP_HUGETLBFS_SHMEM), true);
  if (ioctlPtr(uffd, UFFDIO_API, api.bytes) < 0) return fail("ioctl(UFFDIO_API: WP_ASYNC, WP_UNPOPULATED, WP_HUGETLBFS_SHMEM)");
  const reg = u64s(4);
  reg.view.setBigUint64(0, start, true);
  reg.view.setBigUint64(8, end - start, true);
  reg.view.setBigUint64(16, BigInt(UFFDIO_REGISTER_MODE_WP), true);
  if (ioctlPtr(uffd, UFFDIO_REGISTER, reg.bytes) < 0) return fail("ioctl(UFFDIO_REGISTER)");
  const wp = u64s(3);
  wp.view.setBigUint64(0, start, true);
  wp.view.setBigUint64(8, end - start, true);
  wp.view.setBigUint64(16, BigInt(UFFDIO_WRITEPROTECT_MODE_WP), true);
  if (ioctlPtr(uffd, UFFDIO_WRITEPROTECT, wp.bytes) < 0) return fail("ioctl(UFFDIO_WRITEPROTECT)");
  pagemap = open(pagemapPath, O_RDONLY | O_CLOEXEC);
  if (pagemap < 0) return fail(`open(${pagemapPath})`);
  const arg = u64s(PM_SCAN_ARG_BYTES / 8);
  const regions = new Uint8Array(SCAN_REGIONS * PAGE_REGION_BYTES);
  const regionView = new DataView(regions.buffer);
  const vec = addressOf(regions);
  const pageCount = Math.ceil(range.length / HOST_PAGE);
  const offset = Number(address - start);
  let closed = false;
  const scan = (): Uint32Array => {
    if (closed) throw new Error("write log closed");
    const out = new Set<number>();
    for (let from = start; from < end; ) {
      const v = arg.view;
      v.setBigUint64(0, BigInt(PM_SCAN_ARG_BYTES), true); // size
      v.setBigUint64(8, BigInt(PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC), true); // flags
      v.setBigUint64(16, from, true); // start
      v.setBigUint64(24, end, true); // end
      v.setBigUint64(32, 0n, true); // walk_end (out)
      v.setBigUint64(40, vec, true); // vec
      v.setBigUint64(48, BigInt(SCAN_REGIONS), true); // vec_len
      v.setBigUint64(56, 0n, true); // max_pages: no limit
      v.setBigUint64(64, 0n, true); // category_inverted
      v.setBigUint64(72, BigInt(PAGE_IS_WRITTEN), true); // category_mask
      v.setBigUint64(80, 0n, true); // category_anyof_mask
      v.setBigUint64(88, BigInt(PAGE_IS_WRITTEN), true); // return_mask
      const n = ioctlPtr(pagemap, PAGEMAP_SCAN, arg.bytes);
      if (n < 0) throw sysErrorNow("ioctl(PAGEMAP_SCAN)", what);
      for (let i = 0; i < n; i++) {
        const rs = regionView.getBigUint64(i * PAGE_REGION_BYTES, true);
        const re = regionView.getBigUint64(i * PAGE_REGION_BYTES + 8, true);
        for (let h = Number(rs - start); h < Number(re - start); h += HOST_PAGE) {
          // Host page [h, h + 4096) of the range holds bytes of the buffer's pages (h - offset) / 4096 and the next.
          const first = Math.floor((h - offset) / HOST_PAGE);
          const last = Math.floor((h + HOST_PAGE - 1 - offset) / HOST_PAGE);
          for (let p = Math.max(0, first); p <= Math.min(pageCount - 1, last); p++) out.add(p);
        }
      }
      const walked = v.getBigUint64(32, true);
      if (walked <= from) break; // nothing left (or no progress: never loop)
      from = walked;
    }
    return Uint32Array.from([...out].sort((a, b) => a - b));
  };
  return {
    address,
    length: range.length,
    takeWritten: scan,
    close: () => {
      if (closed) return;
      closed = true;
      close(pagemap);
      close(uffd); // unregisters the range (when the last copy of the descriptor goes)
    },
  };
}
