/**
 * struct ifreq (linux/if.h) and interface-name rules.
 *
 *   struct ifreq {
 *     char ifr_name[IFNAMSIZ];            // offset 0, 16 bytes, NUL-terminated
 *     union {                             // offset 16
 *       struct sockaddr ifr_addr; short ifr_flags; int ifr_ifindex; ...
 *       struct ifmap ifr_map;             // the largest member on 64-bit: 24 bytes
 *     };
 *   };                                    // sizeof == 40 on x86-64 and arm64
 *
 * The buffer is 40 bytes on every architecture we run on (on 32-bit the
 * union is 16 bytes and the kernel reads only 32; the tail is ignored).
 */

/** linux/if.h */
export const IFNAMSIZ = 16;
export const IFREQ_SIZE = 40;
const IFR_NAME_OFFSET = 0;
const IFR_UNION_OFFSET = 16;

// linux/if.h: net_device_flags
export const IFF_UP = 0x1;

/** Bytes a valid name may contain: a conservative subset of what the kernel accepts. */
const NAME_CHARS = /^[A-Za-z0-9_.-]+$/;

/**
 * Throws a RangeError (no system call is made) unless `name` is a valid
 * Linux interface name: 1..15 bytes (IFNAMSIZ 16 with the NUL) of
 * [A-Za-z0-9_.-], not starting with "-", not "." or "..".
 */
export function validateInterfaceName(name: string, what = "interface"): void {
  const bad = (why: string): never => {
    throw new RangeError(`invalid ${what} name ${JSON.stringify(name)}: ${why}`);
  };
  if (name.length === 0) bad("empty");
  if (Buffer.byteLength(name, "utf8") > IFNAMSIZ - 1) bad(`longer than ${IFNAMSIZ - 1} bytes (IFNAMSIZ ${IFNAMSIZ} with the NUL)`);
  if (!NAME_CHARS.test(name)) bad("allowed characters are A-Z a-z 0-9 _ . -");
  if (name.startsWith("-")) bad("must not start with '-'");
  if (name === "." || name === "..") bad("'.' and '..' are reserved");
}

/** A zeroed ifreq with ifr_name set (the name is validated first). */
export function makeIfreq(name: string, what = "interface"): Uint8Array {
  validateInterfaceName(name, what);
  const buf = Buffer.alloc(IFREQ_SIZE);
  buf.write(name, IFR_NAME_OFFSET, "latin1");
  return buf;
}

/** ifr_name as the kernel left it. */
export function ifreqName(ifr: Uint8Array): string {
  const b = Buffer.from(ifr.buffer, ifr.byteOffset + IFR_NAME_OFFSET, IFNAMSIZ);
  const nul = b.indexOf(0);
  return b.toString("latin1", 0, nul < 0 ? IFNAMSIZ : nul);
}

/** ifr_flags: a short in C; read unsigned (the flags we use fit 16 bits). */
export function ifreqFlags(ifr: Uint8Array): number {
  return view(ifr).getUint16(IFR_UNION_OFFSET, true);
}

export function setIfreqFlags(ifr: Uint8Array, flags: number): void {
  view(ifr).setUint16(IFR_UNION_OFFSET, flags & 0xffff, true);
}

/** ifr_ifindex: an int. */
export function ifreqIndex(ifr: Uint8Array): number {
  return view(ifr).getInt32(IFR_UNION_OFFSET, true);
}

export function setIfreqIndex(ifr: Uint8Array, index: number): void {
  view(ifr).setInt32(IFR_UNION_OFFSET, index, true);
}

function view(ifr: Uint8Array): DataView {
  if (ifr.byteLength < IFREQ_SIZE) throw new RangeError(`ifreq buffer of ${ifr.byteLength} bytes, need ${IFREQ_SIZE}`);
  return new DataView(ifr.buffer, ifr.byteOffset, ifr.byteLength);
}
