/**
 * Network interfaces by name: index, existence, link up/down, bridge ports.
 * ioctls on an AF_INET datagram socket, in the caller's network namespace
 * or, with `{ netns }`, in a named one (see netns.ts).
 */
import { SysError, sysErrorNow } from "./errors.js";
import {
  IFF_UP,
  ifreqFlags,
  ifreqIndex,
  makeIfreq,
  setIfreqFlags,
  setIfreqIndex,
} from "./ifreq.js";
import { AF_INET, SOCK_CLOEXEC, SOCK_DGRAM, close, ioctlPtr, socket } from "./libc.js";
import { withNetns } from "./netns.js";

// linux/sockios.h
export const SIOCGIFFLAGS = 0x8913;
export const SIOCSIFFLAGS = 0x8914;
export const SIOCGIFINDEX = 0x8933;
export const SIOCBRADDIF = 0x89a2;
export const SIOCBRDELIF = 0x89a3;

export interface NetnsOption {
  /** A namespace made by `ip netns add`; default: the one this thread is in. */
  netns?: string;
}

function withSocket<T>(opts: NetnsOption | undefined, fn: (sock: number) => T): T {
  return withNetns(opts?.netns, () => {
    const sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) throw sysErrorNow("socket(AF_INET, SOCK_DGRAM)", "interface ioctls");
    try {
      return fn(sock);
    } finally {
      close(sock);
    }
  });
}

function where(opts: NetnsOption | undefined): string {
  return opts?.netns === undefined ? "" : ` in netns ${opts.netns}`;
}

function indexOn(sock: number, name: string, opts: NetnsOption | undefined): number {
  const ifr = makeIfreq(name);
  if (ioctlPtr(sock, SIOCGIFINDEX, ifr) < 0) throw sysErrorNow("ioctl(SIOCGIFINDEX)", `interface ${name}${where(opts)}`);
  return ifreqIndex(ifr);
}

/** The interface's index (if_nametoindex); SysError ENODEV when there is none. */
export function interfaceIndex(name: string, opts?: NetnsOption): number {
  makeIfreq(name); // validate before any system call
  return withSocket(opts, (sock) => indexOn(sock, name, opts));
}

/** Whether an interface of that name exists. */
export function interfaceExists(name: string, opts?: NetnsOption): boolean {
  try {
    interfaceIndex(name, opts);
    return true;
  } catch (err) {
    if (err instanceof SysError && err.code === "ENODEV") return false;
    throw err;
  }
}

/** The interface flags (IFF_*, linux/if.h), low 16 bits. */
export function linkFlags(name: string, opts?: NetnsOption): number {
  const ifr = makeIfreq(name);
  return withSocket(opts, (sock) => {
    if (ioctlPtr(sock, SIOCGIFFLAGS, ifr) < 0) throw sysErrorNow("ioctl(SIOCGIFFLAGS)", `interface ${name}${where(opts)}`);
    return ifreqFlags(ifr);
  });
}

/** Whether the interface is administratively up (IFF_UP). */
export function isLinkUp(name: string, opts?: NetnsOption): boolean {
  return (linkFlags(name, opts) & IFF_UP) !== 0;
}

function setUp(name: string, up: boolean, opts: NetnsOption | undefined): void {
  const ifr = makeIfreq(name);
  withSocket(opts, (sock) => {
    if (ioctlPtr(sock, SIOCGIFFLAGS, ifr) < 0) throw sysErrorNow("ioctl(SIOCGIFFLAGS)", `interface ${name}${where(opts)}`);
    const flags = ifreqFlags(ifr);
    const next = up ? flags | IFF_UP : flags & ~IFF_UP;
    if (next === flags) return;
    setIfreqFlags(ifr, next);
    if (ioctlPtr(sock, SIOCSIFFLAGS, ifr) < 0) throw sysErrorNow("ioctl(SIOCSIFFLAGS)", `interface ${name}${where(opts)}`);
  });
}

/** `ip link set NAME up`. No-op when already up. */
export function setLinkUp(name: string, opts?: NetnsOption): void {
  setUp(name, true, opts);
}

/** `ip link set NAME down`. No-op when already down. */
export function setLinkDown(name: string, opts?: NetnsOption): void {
  setUp(name, false, opts);
}

function bridgePort(request: number, call: string, bridge: string, ifname: string, opts: NetnsOption | undefined): void {
  const ifr = makeIfreq(bridge, "bridge");
  makeIfreq(ifname); // validate before any system call
  withSocket(opts, (sock) => {
    setIfreqIndex(ifr, indexOn(sock, ifname, opts));
    if (ioctlPtr(sock, request, ifr) < 0) throw sysErrorNow(call, `bridge ${bridge} (port ${ifname})${where(opts)}`);
  });
}

/**
 * `ip link set IFNAME master BRIDGE`. Errors: ENODEV naming the bridge when
 * it does not exist (the port: ENODEV from SIOCGIFINDEX naming the port),
 * EOPNOTSUPP when BRIDGE is not a bridge, EBUSY when the port already has a
 * master, ELOOP / EINVAL for ports a bridge cannot take.
 */
export function addToBridge(bridge: string, ifname: string, opts?: NetnsOption): void {
  bridgePort(SIOCBRADDIF, "ioctl(SIOCBRADDIF)", bridge, ifname, opts);
}

/** `ip link set IFNAME nomaster`; EINVAL when IFNAME is not a port of BRIDGE. */
export function removeFromBridge(bridge: string, ifname: string, opts?: NetnsOption): void {
  bridgePort(SIOCBRDELIF, "ioctl(SIOCBRDELIF)", bridge, ifname, opts);
}
