/**
 * One parse of an Ethernet II frame into a typed value (COLO-PROTOCOL.md §6):
 * the face of the proxy's packet code. Importers take everything from here,
 * not from the files behind it:
 *
 * - packet-layout.ts — header layouts, type/flag/option values, with RFCs;
 * - packet-types.ts — the parsed value, `Packet`, and its headers;
 * - packet-parse.ts — `parseFrame` (never throws);
 * - address.ts — MAC and IPv4 addresses as text;
 * - checksum.ts — RFC 1071 checksums, checked or fixed in place;
 * - sequence.ts — sequence-number arithmetic mod 2^32.
 *
 * The proxy sees raw guest frames: Ethernet II without FCS, no VLAN tag. A
 * frame is parsed once, at the boundary, into a `Packet`; the comparator and
 * the TCP rewriter work on that value and on the byte offsets it records.
 */
export {
  ARP,
  ETHERNET,
  ETHERTYPE,
  ICMP,
  ICMP_TYPE,
  IP_PROTOCOL,
  IPV4,
  IPV4_FRAGMENT,
  TCP,
  TCP_FLAG,
  TCP_OPTION,
  TCP_SACK,
  TCP_TIMESTAMPS,
  UDP,
} from "./packet-layout.js";
export type {
  ArpPacket,
  EthernetHeader,
  IcmpMessage,
  Ipv4Header,
  Packet,
  PacketKind,
  TcpFlags,
  TcpOption,
  TcpSackBlock,
  TcpSegment,
  TcpTimestamps,
  UdpDatagram,
} from "./packet-types.js";
export { parseFrame } from "./packet-parse.js";
export { formatIpv4, formatMac, parseIpv4 } from "./address.js";
export type { ChecksumCheck } from "./checksum.js";
export {
  checkChecksums,
  fixChecksums,
  icmpChecksum,
  internetChecksum,
  ipv4HeaderChecksum,
  onesComplementSum,
  tcpChecksum,
  udpChecksum,
} from "./checksum.js";
export { SEQ_MODULUS, segmentLength, seqAdd, seqDiff, seqGt, seqGte } from "./sequence.js";
