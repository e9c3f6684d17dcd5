/**
 * koffi bindings to the C library: the only place that declares libc
 * functions. Each binding is typed here once; callers read `errno()` right
 * after a failing call and turn it into a SysError (errors.ts).
 *
 * Linux only. The constants below are the Linux values shared by x86-64,
 * i386 and arm64 (the architectures this project runs on).
 */
import koffi from "koffi";

if (process.platform !== "linux") {
  throw new Error(`src/sys supports Linux only (this is ${process.platform})`);
}

const libc = koffi.load("libc.so.6");

// asm-generic/fcntl.h
export const O_RDONLY = 0o0;
export const O_RDWR = 0o2;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const O_CREAT = 0o100;

// asm-generic/mman-common.h, linux/mman.h
export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
/** mmap's error return, (void *) -1, as koffi gives pointers: an unsigned 64-bit value. */
export const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

// linux/socket.h, asm-generic/socket.h (SOCK_* from linux/net.h)
export const AF_UNIX = 1;
export const AF_INET = 2;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_CLOEXEC = O_CLOEXEC;

// asm-generic/ioctls.h: bytes unread in a socket's receive queue (SIOCINQ)
export const FIONREAD = 0x541b;

// linux/sched.h
export const CLONE_NEWNET = 0x40000000;

/** int open(const char *path, int flags) — the mode argument is not needed (no O_CREAT). */
export const open = libc.func("int open(const char *path, int flags)") as (path: string, flags: number) => number;
export const close = libc.func("int close(int fd)") as (fd: number) => number;
/** int open(const char *path, int flags, mode_t mode) — with O_CREAT. */
export const openMode = libc.func("open", "int", ["const char *", "int", "uint32"]) as (path: string, flags: number, mode: number) => number;
export const ftruncate = libc.func("int ftruncate(int fd, int64_t length)") as (fd: number, length: number) => number;
/** void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset); pointers are BigInt. */
export const mmap = libc.func("mmap", "void *", ["void *", "size_t", "int", "int", "int", "int64_t"]) as (
  addr: bigint | null,
  length: number,
  prot: number,
  flags: number,
  fd: number,
  offset: number,
) => bigint;
/** A view of `length` bytes at `pointer` (no copy): koffi.view. */
export function viewOf(pointer: bigint, length: number): ArrayBuffer {
  return koffi.view(pointer, length) as ArrayBuffer;
}
/** ssize_t read(int fd, void *buf, size_t count) */
export const read = libc.func("long read(int fd, void *buf, size_t count)") as (
  fd: number,
  buf: Uint8Array,
  count: number,
) => number;
/** ssize_t write(int fd, const void *buf, size_t count) */
export const write = libc.func("long write(int fd, const void *buf, size_t count)") as (
  fd: number,
  buf: Uint8Array,
  count: number,
) => number;
/**
 * ioctl(2) is variadic in C; it is declared twice, non-variadic, once per
 * kind of third argument (the x86-64 and arm64 calling conventions pass
 * both in the same register as the variadic call would).
 */
export const ioctlPtr = libc.func("ioctl", "int", ["int", "ulong", "void *"]) as (
  fd: number,
  request: number,
  arg: Uint8Array,
) => number;
export const ioctlInt = libc.func("ioctl", "int", ["int", "ulong", "uint64"]) as (
  fd: number,
  request: number,
  arg: number | bigint,
) => number;
export const socket = libc.func("int socket(int domain, int type, int protocol)") as (
  domain: number,
  type: number,
  protocol: number,
) => number;
/** int socketpair(int domain, int type, int protocol, int sv[2]) */
export const socketpair = libc.func("int socketpair(int domain, int type, int protocol, int *sv)") as (
  domain: number,
  type: number,
  protocol: number,
  sv: Int32Array,
) => number;
export const setns = libc.func("int setns(int fd, int nstype)") as (fd: number, nstype: number) => number;
/** long syscall(long number, ...): for calls glibc 2.36 has no wrapper of (pidfd_getfd). Arguments as koffi's variadic pairs. */
const syscall = libc.func("long syscall(long number, ...)") as (number: number, ...typesAndValues: unknown[]) => number | bigint;
// asm/unistd_64.h; the same numbers in asm-generic/unistd.h (arm64) for these post-5.x calls
const SYS_PIDFD_OPEN = 434;
const SYS_PIDFD_GETFD = 438;
/** int pidfd_open(pid_t pid, unsigned int flags) (Linux 5.3). */
export function pidfdOpen(pid: number): number {
  return Number(syscall(SYS_PIDFD_OPEN, "int", pid, "uint", 0));
}
/** int pidfd_getfd(int pidfd, int targetfd, unsigned int flags) (Linux 5.6): a copy of another process's descriptor, close-on-exec. */
export function pidfdGetfd(pidfd: number, targetFd: number): number {
  return Number(syscall(SYS_PIDFD_GETFD, "int", pidfd, "int", targetFd, "uint", 0));
}
/** memmove(d, d, 0) returns d: the address koffi passes for a buffer (in place for wasm memory and large ArrayBuffers). */
const memmoveAddress = libc.func("memmove", "void *", ["void *", "void *", "size_t"]) as (d: Uint8Array, s: Uint8Array, n: number) => unknown;
/** The address of `bytes`' first byte as koffi passes it to C. */
export function addressOf(bytes: Uint8Array): bigint {
  return koffi.address(memmoveAddress(bytes, bytes, 0));
}
/** int madvise(void *addr, size_t length, int advice) */
export const madvise = libc.func("madvise", "int", ["uint64", "size_t", "int"]) as (addr: bigint, length: number, advice: number) => number;
// asm-generic/mman-common.h
export const MADV_NOHUGEPAGE = 15;
export const strerror = libc.func("const char *strerror(int errnum)") as (errnum: number) => string;

/** errno as left by the last koffi call on this thread. */
export function errno(): number {
  return koffi.errno();
}

/** errno names by number (koffi's table of the platform's values). */
export const errnoNames: ReadonlyMap<number, string> = (() => {
  const m = new Map<number, string>();
  // Aliases with the same value: keep the name glibc and the kernel use.
  const preferred = new Set(["EAGAIN", "EOPNOTSUPP", "EDEADLK"]);
  for (const [name, value] of Object.entries(koffi.os.errno)) {
    const prev = m.get(value);
    if (prev === undefined || (preferred.has(name) && !preferred.has(prev))) m.set(value, name);
  }
  return m;
})();

/** The errno number for a name, e.g. errnoValue("EAGAIN") === 11. */
export function errnoValue(name: string): number {
  const v = koffi.os.errno[name];
  if (v === undefined) throw new RangeError(`unknown errno name ${name}`);
  return v;
}
