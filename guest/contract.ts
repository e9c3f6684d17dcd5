/**
 * The contract between the host and the guest's /init (guest/init.sh):
 * kernel command-line keys the init understands, the console markers it
 * prints, and where things are inside the guest. docs/guest.md describes the
 * same for users; contract.test.ts checks init.sh against these constants.
 */

import { GuestBuildError } from "./errors.js";

/** Printed on the console once `redis-cli ping` answers PONG. */
export const GUEST_READY_MARKER = "COLO-GUEST-READY redis";
/** Printed, followed by a space and a reason, when the network, the data disk or Redis fails. */
export const GUEST_FAILED_MARKER = "COLO-GUEST-FAILED";
/**
 * With `colo.memtest=SIZE`: printed after each single pass of
 * `memtester SIZE 1`, numbered from 1: `COLO-MEMTEST-PASS <n>` when it
 * exited 0, else `COLO-MEMTEST-FAIL <n> <exit status>` followed by up to
 * MEMTEST_LOG_LINES lines `memtester <n>: <line>` (the end of its output).
 * Each report is preceded by a newline, so it starts a line even when the
 * console shell's prompt is on the console (hence empty lines between them).
 */
export const MEMTEST_PASS_MARKER = "COLO-MEMTEST-PASS";
export const MEMTEST_FAIL_MARKER = "COLO-MEMTEST-FAIL";
export const MEMTEST_LOG_LINES = 8;
/**
 * memtester's exit status is the OR of these (memtester(8) "EXIT CODE");
 * a status above 128 is 128 + the signal that killed it (the shell's rule).
 */
export const MEMTEST_EXIT_BITS = { nonstarter: 0x01, stuckAddress: 0x02, otherTest: 0x04 } as const;
/** colo.memtest bounds, in KiB: memtester needs at least a page; more than 64 MiB would crowd Redis out of a 128-160 MiB guest. */
export const MEMTEST_MIN_KIB = 4;
export const MEMTEST_MAX_KIB = 64 * 1024;

/** The console shell's prompt (a root shell on ttyS0, respawned when it exits). */
export const GUEST_SHELL_PROMPT = "colo-guest# ";
/** The kernel console: the first 8250 UART (v86's serial0, QEMU's first -serial). */
export const GUEST_CONSOLE = "ttyS0";
/**
 * The data disk as the guest may see it, in the order /init looks for it
 * (the first one the kernel found, /sys/block/<name>): `/dev/sda`, the first
 * IDE disk through libata (emu: v86 `hda`), or `/dev/vda`, the first
 * virtio-blk disk (qemu). Each target names its own (`dataDevice` in
 * target.ts). Where it is mounted: GUEST_DATA_DIR.
 */
export const GUEST_DATA_DEVICES = ["/dev/sda", "/dev/vda"] as const;
export type GuestDataDevice = (typeof GUEST_DATA_DEVICES)[number];
export const GUEST_DATA_DIR = "/data";
export const GUEST_REDIS_PORT = 6379;
/** The guest's network interface (the only NIC). */
export const GUEST_NIC = "eth0";

/** Kernel command-line keys read by /init. */
export const CMDLINE_KEYS = {
  ip: "colo.ip",
  gateway: "colo.gw",
  hostname: "colo.hostname",
  appendfsync: "colo.appendfsync",
  memtest: "colo.memtest",
} as const;

export type AppendFsync = "always" | "everysec" | "no";

export interface GuestBootOptions {
  /** IPv4 address with prefix length, e.g. "10.77.0.10/24"; no address on eth0 when absent. */
  ip?: string;
  /** Default gateway, e.g. "10.77.0.1". */
  gateway?: string;
  hostname?: string;
  /** Redis appendfsync when a data disk is present (default everysec). */
  appendfsync?: AppendFsync;
  /** Run memtester in the guest forever, one pass at a time, over this much memory: "16M", "512K" (see parseMemtestSize). */
  memtest?: string;
  /** Pass "quiet" to the kernel (default true): boot messages slow the emulated UART. */
  quiet?: boolean;
  /** More kernel parameters, appended verbatim. */
  extra?: readonly string[];
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/**
 * A colo.memtest value in KiB, or undefined when init.sh would refuse it:
 * 1-6 digits without a leading zero, then K or M, within
 * MEMTEST_MIN_KIB..MEMTEST_MAX_KIB. (init.sh's memtest_kib applies the same rule.)
 */
export function parseMemtestSize(value: string): number | undefined {
  const m = /^([1-9]\d{0,5})([KM])$/.exec(value);
  if (m === null) return undefined;
  const kib = Number(m[1]) * (m[2] === "M" ? 1024 : 1);
  return kib >= MEMTEST_MIN_KIB && kib <= MEMTEST_MAX_KIB ? kib : undefined;
}

function invalid(what: string): GuestBuildError {
  return new GuestBuildError("INVALID_OPTION", `guest command line: ${what}`);
}

/** Builds the kernel command line for the guest; validates every value the init will parse. */
export function guestKernelCmdline(opts: GuestBootOptions = {}): string {
  const parts = [`console=${GUEST_CONSOLE}`];
  if (opts.quiet ?? true) parts.push("quiet");
  if (opts.ip !== undefined) {
    const [addr, prefix, more] = opts.ip.split("/");
    const p = Number(prefix);
    if (addr === undefined || !IPV4.test(addr) || more !== undefined || prefix === undefined || !/^\d{1,2}$/.test(prefix) || p > 32) {
      throw invalid(`${CMDLINE_KEYS.ip} must be A.B.C.D/NN, got "${opts.ip}"`);
    }
    parts.push(`${CMDLINE_KEYS.ip}=${opts.ip}`);
  }
  if (opts.gateway !== undefined) {
    if (!IPV4.test(opts.gateway)) throw invalid(`${CMDLINE_KEYS.gateway} must be A.B.C.D, got "${opts.gateway}"`);
    parts.push(`${CMDLINE_KEYS.gateway}=${opts.gateway}`);
  }
  if (opts.hostname !== undefined) {
    if (!HOSTNAME.test(opts.hostname)) throw invalid(`${CMDLINE_KEYS.hostname} "${opts.hostname}" is not a valid host name`);
    parts.push(`${CMDLINE_KEYS.hostname}=${opts.hostname}`);
  }
  if (opts.appendfsync !== undefined) {
    if (!["always", "everysec", "no"].includes(opts.appendfsync)) throw invalid(`bad ${CMDLINE_KEYS.appendfsync} "${String(opts.appendfsync)}"`);
    parts.push(`${CMDLINE_KEYS.appendfsync}=${opts.appendfsync}`);
  }
  if (opts.memtest !== undefined) {
    if (parseMemtestSize(opts.memtest) === undefined) {
      throw invalid(`${CMDLINE_KEYS.memtest} must be digits then K or M, ${MEMTEST_MIN_KIB}K to ${MEMTEST_MAX_KIB / 1024}M, got "${opts.memtest}"`);
    }
    parts.push(`${CMDLINE_KEYS.memtest}=${opts.memtest}`);
  }
  for (const e of opts.extra ?? []) {
    if (e === "" || /\s/.test(e)) throw invalid(`extra parameter "${e}" is empty or contains white space`);
    parts.push(e);
  }
  return parts.join(" ");
}
