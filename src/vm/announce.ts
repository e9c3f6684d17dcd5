/**
 * Frames that tell the LAN where a guest's MAC now lives, sent after the
 * guest moved to this host (migration, failover). Like QEMU's
 * qemu_announce_self: RARP frames (switches learn the source MAC from any
 * frame; RARP is what QEMU and Xen's netback send), plus a gratuitous ARP
 * when the guest's IPv4 address is known, so neighbours refresh their ARP
 * caches too.
 */

const ETH_ALEN = 6;
const ETH_HLEN = 14;
/** linux/if_ether.h */
const ETH_P_ARP = 0x0806;
const ETH_P_RARP = 0x8035;
/** RFC 826 / RFC 903 */
const ARPHRD_ETHER = 1;
const ARPOP_REQUEST = 1;
const ARPOP_RREQUEST = 3;
/** Ethernet minimum frame (without FCS): 60 octets. */
const ETH_MIN_FRAME = 60;

const BROADCAST = Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff);

function arpFrame(ethertype: number, op: number, mac: Uint8Array, senderIp: Uint8Array, targetMac: Uint8Array, targetIp: Uint8Array): Uint8Array {
  if (mac.length !== ETH_ALEN) throw new RangeError(`MAC must be ${ETH_ALEN} octets`);
  const f = new Uint8Array(ETH_MIN_FRAME);
  const v = new DataView(f.buffer);
  f.set(BROADCAST, 0);
  f.set(mac, ETH_ALEN);
  v.setUint16(12, ethertype);
  const a = ETH_HLEN;
  v.setUint16(a, ARPHRD_ETHER);
  v.setUint16(a + 2, 0x0800); // protocol: IPv4
  f[a + 4] = ETH_ALEN;
  f[a + 5] = 4;
  v.setUint16(a + 6, op);
  f.set(mac, a + 8);
  f.set(senderIp, a + 14);
  f.set(targetMac, a + 18);
  f.set(targetIp, a + 24);
  return f;
}

function parseIPv4(text: string): Uint8Array {
  const addr = text.split("/")[0] ?? "";
  const parts = addr.split(".").map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new Error(`bad IPv4 address "${text}"`);
  return Uint8Array.from(parts);
}

/** RARP "request reverse" with the guest MAC as sender and target (what QEMU sends). */
export function rarpAnnounce(mac: Uint8Array): Uint8Array {
  const zero = new Uint8Array(4);
  return arpFrame(ETH_P_RARP, ARPOP_RREQUEST, mac, zero, mac, zero);
}

/** Gratuitous ARP request: sender and target IP are the guest's own (RFC 5227 §3 "ARP Announcement"). */
export function gratuitousArp(mac: Uint8Array, ip: string): Uint8Array {
  const addr = parseIPv4(ip);
  return arpFrame(ETH_P_ARP, ARPOP_REQUEST, mac, addr, new Uint8Array(ETH_ALEN), addr);
}

export function announceFrames(mac: Uint8Array, ip?: string): Uint8Array[] {
  return ip ? [rarpAnnounce(mac), gratuitousArp(mac, ip)] : [rarpAnnounce(mac)];
}

/** QEMU's announce defaults: 5 rounds, 50 ms apart growing by 100 ms. */
export const ANNOUNCE_ROUNDS = 5;
export const ANNOUNCE_INITIAL_MS = 50;
export const ANNOUNCE_STEP_MS = 100;
