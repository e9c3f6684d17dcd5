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
/** The console shell's prompt (a root shell on ttyS0, respawned when it exits). */
export const GUEST_SHELL_PROMPT = "colo-guest# ";
/** The kernel console: the first 8250 UART, v86's serial0. */
export const GUEST_CONSOLE = "ttyS0";
/** The data disk as the guest sees it (first IDE disk through libata), and where it is mounted. */
export const GUEST_DATA_DEVICE = "/dev/sda";
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
  /** Pass "quiet" to the kernel (default true): boot messages slow the emulated UART. */
  quiet?: boolean;
  /** More kernel parameters, appended verbatim. */
  extra?: readonly string[];
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

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
  for (const e of opts.extra ?? []) {
    if (e === "" || /\s/.test(e)) throw invalid(`extra parameter "${e}" is empty or contains white space`);
    parts.push(e);
  }
  return parts.join(" ");
}
