/**
 * Checksums (RFC 1071 internet checksum): the IPv4 header checksum
 * (RFC 791), the TCP/UDP checksums over the IPv4 pseudo-header (RFC 793
 * §3.1, RFC 768) and the ICMP checksum (RFC 792); checking a frame's and
 * recomputing them in place (`fixChecksums`). Parsing does not validate
 * checksums: a guest NIC with checksum offload may hand out frames whose
 * transport checksum is only partial.
 */
import { ICMP, IPV4, TCP, UDP } from "./packet-layout.js";
import { parseFrame, view } from "./packet-parse.js";
import type { IcmpMessage, Ipv4Header, TcpSegment, UdpDatagram } from "./packet-types.js";

/**
 * One's complement sum of 16-bit big-endian words over bytes[start, end),
 * folded to 16 bits, added to `acc`. An odd trailing octet is padded with zero.
 */
export function onesComplementSum(bytes: Uint8Array, start = 0, end = bytes.length, acc = 0): number {
  let sum = acc;
  let i = start;
  for (; i + 1 < end; i += 2) sum += ((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0);
  if (i < end) sum += (bytes[i] ?? 0) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/** The value to store in a checksum field: the complement of the one's complement sum (RFC 1071 §1). */
export function internetChecksum(bytes: Uint8Array, start = 0, end = bytes.length, acc = 0): number {
  return ~onesComplementSum(bytes, start, end, acc) & 0xffff;
}

/** Checksum of [start, end) with the 16-bit field at `fieldOffset` taken as zero (fieldOffset - start must be even). */
function checksumSkipping(bytes: Uint8Array, start: number, end: number, fieldOffset: number, acc = 0): number {
  const before = onesComplementSum(bytes, start, fieldOffset, acc);
  return internetChecksum(bytes, fieldOffset + 2, end, before);
}

/** The IPv4 header checksum this header should carry (RFC 791 §3.1). */
export function ipv4HeaderChecksum(frame: Uint8Array, ip: Ipv4Header): number {
  return checksumSkipping(frame, ip.offset, ip.offset + ip.headerLength, ip.offset + IPV4.checksum);
}

/** Sum of the IPv4 pseudo-header: src, dst, zero, protocol, transport length (RFC 793 §3.1, RFC 768). */
function pseudoHeaderSum(ip: Ipv4Header, transportLength: number): number {
  let sum = (ip.src >>> 16) + (ip.src & 0xffff) + (ip.dst >>> 16) + (ip.dst & 0xffff) + ip.protocol + transportLength;
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/** The TCP checksum this segment should carry: pseudo-header + header + data. */
export function tcpChecksum(frame: Uint8Array, ip: Ipv4Header, tcp: TcpSegment): number {
  const end = ip.offset + ip.totalLength;
  return checksumSkipping(frame, tcp.offset, end, tcp.offset + TCP.checksum, pseudoHeaderSum(ip, end - tcp.offset));
}

/** The UDP checksum this datagram should carry; a computed 0 is sent as 0xffff (RFC 768). */
export function udpChecksum(frame: Uint8Array, ip: Ipv4Header, udp: UdpDatagram): number {
  const end = udp.offset + udp.length;
  const sum = checksumSkipping(frame, udp.offset, end, udp.offset + UDP.checksum, pseudoHeaderSum(ip, udp.length));
  return sum === 0 ? 0xffff : sum;
}

/** The ICMP checksum this message should carry (RFC 792: over the whole ICMP message). */
export function icmpChecksum(frame: Uint8Array, icmp: IcmpMessage): number {
  return checksumSkipping(frame, icmp.offset, icmp.offset + icmp.message.length, icmp.offset + ICMP.checksum);
}

export interface ChecksumCheck {
  ipv4: boolean;
  /** TCP, UDP or ICMP checksum; undefined for other packets (and for UDP sent without a checksum). */
  transport?: boolean;
}

/** Whether an IPv4 frame's checksums are right; undefined when the frame is not IPv4. */
export function checkChecksums(frame: Uint8Array): ChecksumCheck | undefined {
  const p = parseFrame(frame);
  if (p.kind !== "tcp" && p.kind !== "udp" && p.kind !== "icmp" && p.kind !== "ipv4") return undefined;
  const result: ChecksumCheck = { ipv4: ipv4HeaderChecksum(frame, p.ip) === p.ip.checksum };
  if (p.kind === "tcp") result.transport = tcpChecksum(frame, p.ip, p.tcp) === p.tcp.checksum;
  else if (p.kind === "udp" && p.udp.checksum !== 0) result.transport = udpChecksum(frame, p.ip, p.udp) === p.udp.checksum;
  else if (p.kind === "icmp") result.transport = icmpChecksum(frame, p.icmp) === p.icmp.checksum;
  return result;
}

/**
 * Recomputes, in place, the IPv4 header checksum and the TCP, UDP (unless
 * sent without one) or ICMP checksum of `frame`. Returns false, changing
 * nothing, when the frame is not a well-formed IPv4 packet.
 */
export function fixChecksums(frame: Uint8Array): boolean {
  const p = parseFrame(frame);
  if (p.kind !== "tcp" && p.kind !== "udp" && p.kind !== "icmp" && p.kind !== "ipv4") return false;
  const v = view(frame);
  v.setUint16(p.ip.offset + IPV4.checksum, ipv4HeaderChecksum(frame, p.ip));
  if (p.kind === "tcp") v.setUint16(p.tcp.offset + TCP.checksum, tcpChecksum(frame, p.ip, p.tcp));
  else if (p.kind === "udp" && p.udp.checksum !== 0) v.setUint16(p.udp.offset + UDP.checksum, udpChecksum(frame, p.ip, p.udp));
  else if (p.kind === "icmp") v.setUint16(p.icmp.offset + ICMP.checksum, icmpChecksum(frame, p.icmp));
  return true;
}
