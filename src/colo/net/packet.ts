/**
 * One parse of an Ethernet II frame into a typed value (COLO-PROTOCOL.md §6).
 *
 * The proxy sees raw guest frames: Ethernet II without FCS, no VLAN tag. A
 * frame is parsed once, at the boundary, into a `Packet`; the comparator and
 * the TCP rewriter work on that value and on the byte offsets it records.
 * Parsing never throws: anything truncated or inconsistent becomes
 * `{ kind: "other", malformed: true, reason }`, and anything we do not look
 * into (non-IP EtherTypes) becomes `{ kind: "other", malformed: false }`.
 *
 * All offsets in the parsed value are absolute (from the start of the frame),
 * so a copy of the frame can be rewritten in place through them.
 *
 * Checksums: RFC 1071 internet checksum; IPv4 header checksum (RFC 791) and
 * the TCP/UDP checksums over the IPv4 pseudo-header (RFC 793 §3.1, RFC 768).
 * Parsing does not validate checksums: a guest NIC with checksum offload may
 * hand out frames whose transport checksum is only partial.
 */

// ---------------------------------------------------------------------------
// Layouts. Each field's offset is relative to the start of its header.

/** Ethernet II (DIX) header: IEEE 802.3 clause 3.2.3; no 802.1Q tag, no FCS. */
export const ETHERNET = {
  dst: 0,
  src: 6,
  ethertype: 12,
  headerLength: 14,
  macLength: 6,
} as const;

/** EtherType values (IEEE EtherType registry; RFC 826, RFC 894, RFC 2464). */
export const ETHERTYPE = {
  ipv4: 0x0800,
  arp: 0x0806,
  ipv6: 0x86dd,
} as const;

/** ARP for IPv4 over Ethernet: RFC 826 ("Packet format"). */
export const ARP = {
  hardwareType: 0,
  protocolType: 2,
  hardwareLength: 4,
  protocolLength: 5,
  operation: 6,
  senderMac: 8,
  senderIp: 14,
  targetMac: 18,
  targetIp: 24,
  length: 28,
  /** htype 1 = Ethernet (RFC 826; IANA ARP parameters). */
  hardwareEthernet: 1,
} as const;

/** IPv4 header: RFC 791 §3.1. */
export const IPV4 = {
  versionIhl: 0,
  tos: 1,
  totalLength: 2,
  id: 4,
  flagsFragment: 6,
  ttl: 8,
  protocol: 9,
  checksum: 10,
  src: 12,
  dst: 16,
  minHeaderLength: 20,
  version: 4,
  /** IHL counts 32-bit words. */
  ihlUnit: 4,
} as const;

/** Bits of the 16-bit flags/fragment-offset field (RFC 791 §3.1). */
export const IPV4_FRAGMENT = {
  dontFragment: 0x4000,
  moreFragments: 0x2000,
  offsetMask: 0x1fff,
  /** The fragment offset counts 8-octet units. */
  offsetUnit: 8,
} as const;

/** IP protocol numbers (IANA; RFC 790): ICMP, TCP, UDP. */
export const IP_PROTOCOL = {
  icmp: 1,
  tcp: 6,
  udp: 17,
} as const;

/** TCP header: RFC 793 §3.1 (restated in RFC 9293 §3.1). */
export const TCP = {
  srcPort: 0,
  dstPort: 2,
  seq: 4,
  ack: 8,
  /** High nibble: data offset in 32-bit words. */
  dataOffset: 12,
  flags: 13,
  window: 14,
  checksum: 16,
  urgentPointer: 18,
  minHeaderLength: 20,
  dataOffsetUnit: 4,
} as const;

/** TCP flag bits in byte 13 (RFC 793 §3.1; CWR/ECE from RFC 3168 §23.2). */
export const TCP_FLAG = {
  fin: 0x01,
  syn: 0x02,
  rst: 0x04,
  psh: 0x08,
  ack: 0x10,
  urg: 0x20,
  ece: 0x40,
  cwr: 0x80,
} as const;

/** TCP option kinds: RFC 793 §3.1 (0, 1, 2), RFC 7323 (3, 8), RFC 2018 (4, 5). */
export const TCP_OPTION = {
  endOfList: 0,
  noOperation: 1,
  maxSegmentSize: 2,
  windowScale: 3,
  sackPermitted: 4,
  sack: 5,
  timestamps: 8,
} as const;

/** Timestamps option: kind 8, length 10, TSval, TSecr (RFC 7323 §3.2). Offsets from the option's kind byte. */
export const TCP_TIMESTAMPS = {
  length: 10,
  tsval: 2,
  tsecr: 6,
} as const;

/** SACK option: kind 5, length 2 + 8n, then n blocks of (left edge, right edge) (RFC 2018 §3). */
export const TCP_SACK = {
  firstBlock: 2,
  blockLength: 8,
  left: 0,
  right: 4,
} as const;

/** UDP header: RFC 768. */
export const UDP = {
  srcPort: 0,
  dstPort: 2,
  length: 4,
  checksum: 6,
  headerLength: 8,
} as const;

/** ICMP header: RFC 792 (type, code, checksum, then 4 octets whose meaning depends on the type). */
export const ICMP = {
  type: 0,
  code: 1,
  checksum: 2,
  restOfHeader: 4,
  /** Echo / echo reply: identifier and sequence number in the rest of the header. */
  identifier: 4,
  sequence: 6,
  headerLength: 8,
} as const;

/** ICMP types whose rest-of-header carries an identifier (RFC 792: echo reply 0, echo 8). */
export const ICMP_TYPE = {
  echoReply: 0,
  echoRequest: 8,
} as const;

// ---------------------------------------------------------------------------
// Parsed values.

export interface EthernetHeader {
  dst: string;
  src: string;
  ethertype: number;
}

export interface ArpPacket {
  operation: number;
  senderMac: string;
  senderIp: number;
  targetMac: string;
  targetIp: number;
}

export interface Ipv4Header {
  /** Offset of the IP header in the frame. */
  offset: number;
  headerLength: number;
  /** From the header; Ethernet padding beyond it is not part of the packet. */
  totalLength: number;
  id: number;
  dontFragment: boolean;
  moreFragments: boolean;
  /** Fragment offset in octets. */
  fragmentOffset: number;
  /** The raw 16-bit flags/fragment-offset field. */
  flagsFragment: number;
  ttl: number;
  protocol: number;
  checksum: number;
  src: number;
  dst: number;
  srcText: string;
  dstText: string;
  payloadOffset: number;
  payload: Uint8Array;
}

export interface TcpFlags {
  fin: boolean;
  syn: boolean;
  rst: boolean;
  psh: boolean;
  ack: boolean;
  urg: boolean;
}

export interface TcpOption {
  kind: number;
  /** Absolute offset of the kind byte. */
  offset: number;
  /** Total option length in octets (1 for EOL and NOP). */
  length: number;
}

export interface TcpTimestamps {
  tsval: number;
  tsecr: number;
  /** Absolute offsets of the two 32-bit fields. */
  tsvalOffset: number;
  tsecrOffset: number;
}

export interface TcpSackBlock {
  left: number;
  right: number;
  leftOffset: number;
  rightOffset: number;
}

export interface TcpSegment {
  offset: number;
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: TcpFlags;
  flagBits: number;
  /** Header length in octets (data offset × 4). */
  headerLength: number;
  window: number;
  checksum: number;
  urgentPointer: number;
  options: TcpOption[];
  timestamps?: TcpTimestamps;
  sack: TcpSackBlock[];
  payloadOffset: number;
  payload: Uint8Array;
}

export interface UdpDatagram {
  offset: number;
  srcPort: number;
  dstPort: number;
  length: number;
  checksum: number;
  payload: Uint8Array;
}

export interface IcmpMessage {
  offset: number;
  type: number;
  code: number;
  checksum: number;
  /** The 4 octets after the checksum. */
  restOfHeader: Uint8Array;
  /** Echo and echo reply only. */
  identifier?: number;
  data: Uint8Array;
  /** The whole ICMP message (header and data). */
  message: Uint8Array;
}

export type Packet =
  | { kind: "arp"; eth: EthernetHeader; arp: ArpPacket }
  | { kind: "ipv6"; eth: EthernetHeader }
  | { kind: "tcp"; eth: EthernetHeader; ip: Ipv4Header; tcp: TcpSegment }
  | { kind: "udp"; eth: EthernetHeader; ip: Ipv4Header; udp: UdpDatagram }
  | { kind: "icmp"; eth: EthernetHeader; ip: Ipv4Header; icmp: IcmpMessage }
  /** IPv4 with another protocol, or any fragment (its transport header may be absent). */
  | { kind: "ipv4"; eth: EthernetHeader; ip: Ipv4Header }
  | { kind: "other"; eth?: EthernetHeader; malformed: boolean; reason: string };

export type PacketKind = Packet["kind"];

// ---------------------------------------------------------------------------
// Addresses.

export function formatMac(bytes: Uint8Array, offset = 0): string {
  const parts: string[] = [];
  for (let i = 0; i < ETHERNET.macLength; i++) parts.push((bytes[offset + i] ?? 0).toString(16).padStart(2, "0"));
  return parts.join(":");
}

export function formatIpv4(address: number): string {
  return [address >>> 24, (address >>> 16) & 0xff, (address >>> 8) & 0xff, address & 0xff].join(".");
}

/** "10.0.0.1" -> 0x0a000001; undefined when not a dotted quad. */
export function parseIpv4(text: string): number | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part)) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    value = value * 256 + n;
  }
  return value >>> 0;
}

// ---------------------------------------------------------------------------
// Parsing.

function view(frame: Uint8Array): DataView {
  return new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
}

function other(reason: string, malformed: boolean, eth?: EthernetHeader): Packet {
  return eth ? { kind: "other", eth, malformed, reason } : { kind: "other", malformed, reason };
}

/** Parses a frame; never throws. */
export function parseFrame(frame: Uint8Array): Packet {
  if (frame.length < ETHERNET.headerLength) return other(`frame of ${frame.length} octets is shorter than an Ethernet header`, true);
  const v = view(frame);
  const eth: EthernetHeader = {
    dst: formatMac(frame, ETHERNET.dst),
    src: formatMac(frame, ETHERNET.src),
    ethertype: v.getUint16(ETHERNET.ethertype),
  };
  switch (eth.ethertype) {
    case ETHERTYPE.arp:
      return parseArp(frame, v, eth);
    case ETHERTYPE.ipv6:
      return { kind: "ipv6", eth };
    case ETHERTYPE.ipv4:
      return parseIpv4Packet(frame, v, eth);
    default:
      return other(`ethertype 0x${eth.ethertype.toString(16).padStart(4, "0")}`, false, eth);
  }
}

function parseArp(frame: Uint8Array, v: DataView, eth: EthernetHeader): Packet {
  const o = ETHERNET.headerLength;
  if (frame.length < o + ARP.length) return other("ARP packet truncated", true, eth);
  if (
    v.getUint16(o + ARP.hardwareType) !== ARP.hardwareEthernet ||
    v.getUint16(o + ARP.protocolType) !== ETHERTYPE.ipv4 ||
    v.getUint8(o + ARP.hardwareLength) !== ETHERNET.macLength ||
    v.getUint8(o + ARP.protocolLength) !== 4
  ) {
    return other("ARP for other than IPv4 over Ethernet", true, eth);
  }
  return {
    kind: "arp",
    eth,
    arp: {
      operation: v.getUint16(o + ARP.operation),
      senderMac: formatMac(frame, o + ARP.senderMac),
      senderIp: v.getUint32(o + ARP.senderIp),
      targetMac: formatMac(frame, o + ARP.targetMac),
      targetIp: v.getUint32(o + ARP.targetIp),
    },
  };
}

function parseIpv4Packet(frame: Uint8Array, v: DataView, eth: EthernetHeader): Packet {
  const o = ETHERNET.headerLength;
  if (frame.length < o + IPV4.minHeaderLength) return other("IPv4 header truncated", true, eth);
  const versionIhl = v.getUint8(o + IPV4.versionIhl);
  if (versionIhl >> 4 !== IPV4.version) return other(`IP version ${versionIhl >> 4} in an IPv4 frame`, true, eth);
  const headerLength = (versionIhl & 0x0f) * IPV4.ihlUnit;
  if (headerLength < IPV4.minHeaderLength) return other(`IPv4 header length ${headerLength} < 20`, true, eth);
  const totalLength = v.getUint16(o + IPV4.totalLength);
  if (totalLength < headerLength) return other(`IPv4 total length ${totalLength} < header length ${headerLength}`, true, eth);
  if (o + totalLength > frame.length) {
    return other(`IPv4 total length ${totalLength} exceeds the frame's ${frame.length - o} octets`, true, eth);
  }
  const flagsFragment = v.getUint16(o + IPV4.flagsFragment);
  const src = v.getUint32(o + IPV4.src);
  const dst = v.getUint32(o + IPV4.dst);
  const payloadOffset = o + headerLength;
  const ip: Ipv4Header = {
    offset: o,
    headerLength,
    totalLength,
    id: v.getUint16(o + IPV4.id),
    dontFragment: (flagsFragment & IPV4_FRAGMENT.dontFragment) !== 0,
    moreFragments: (flagsFragment & IPV4_FRAGMENT.moreFragments) !== 0,
    fragmentOffset: (flagsFragment & IPV4_FRAGMENT.offsetMask) * IPV4_FRAGMENT.offsetUnit,
    flagsFragment,
    ttl: v.getUint8(o + IPV4.ttl),
    protocol: v.getUint8(o + IPV4.protocol),
    checksum: v.getUint16(o + IPV4.checksum),
    src,
    dst,
    srcText: formatIpv4(src),
    dstText: formatIpv4(dst),
    payloadOffset,
    payload: frame.subarray(payloadOffset, o + totalLength),
  };
  // A fragment's transport header may be absent or incomplete: classify as plain IPv4.
  if (ip.moreFragments || ip.fragmentOffset !== 0) return { kind: "ipv4", eth, ip };
  switch (ip.protocol) {
    case IP_PROTOCOL.tcp:
      return parseTcp(frame, v, eth, ip);
    case IP_PROTOCOL.udp:
      return parseUdp(v, eth, ip);
    case IP_PROTOCOL.icmp:
      return parseIcmp(v, eth, ip);
    default:
      return { kind: "ipv4", eth, ip };
  }
}

function parseTcp(frame: Uint8Array, v: DataView, eth: EthernetHeader, ip: Ipv4Header): Packet {
  const o = ip.payloadOffset;
  const end = ip.offset + ip.totalLength;
  if (ip.payload.length < TCP.minHeaderLength) return other("TCP header truncated", true, eth);
  const headerLength = (v.getUint8(o + TCP.dataOffset) >> 4) * TCP.dataOffsetUnit;
  if (headerLength < TCP.minHeaderLength) return other(`TCP data offset ${headerLength} < 20`, true, eth);
  if (headerLength > ip.payload.length) return other(`TCP data offset ${headerLength} exceeds the segment's ${ip.payload.length} octets`, true, eth);
  const flagBits = v.getUint8(o + TCP.flags);
  const options: TcpOption[] = [];
  const sack: TcpSackBlock[] = [];
  let timestamps: TcpTimestamps | undefined;
  const optionsEnd = o + headerLength;
  let p = o + TCP.minHeaderLength;
  while (p < optionsEnd) {
    const kind = v.getUint8(p);
    if (kind === TCP_OPTION.endOfList) {
      options.push({ kind, offset: p, length: 1 });
      break;
    }
    if (kind === TCP_OPTION.noOperation) {
      options.push({ kind, offset: p, length: 1 });
      p += 1;
      continue;
    }
    if (p + 1 >= optionsEnd) return other(`TCP option ${kind} has no length octet`, true, eth);
    const length = v.getUint8(p + 1);
    if (length < 2 || p + length > optionsEnd) return other(`TCP option ${kind} length ${length} does not fit the header`, true, eth);
    if (kind === TCP_OPTION.timestamps) {
      if (length !== TCP_TIMESTAMPS.length) return other(`TCP timestamps option length ${length} != 10`, true, eth);
      timestamps = {
        tsval: v.getUint32(p + TCP_TIMESTAMPS.tsval),
        tsecr: v.getUint32(p + TCP_TIMESTAMPS.tsecr),
        tsvalOffset: p + TCP_TIMESTAMPS.tsval,
        tsecrOffset: p + TCP_TIMESTAMPS.tsecr,
      };
    } else if (kind === TCP_OPTION.sack) {
      if ((length - TCP_SACK.firstBlock) % TCP_SACK.blockLength !== 0) return other(`TCP SACK option length ${length} is not 2 + 8n`, true, eth);
      for (let b = p + TCP_SACK.firstBlock; b < p + length; b += TCP_SACK.blockLength) {
        sack.push({
          left: v.getUint32(b + TCP_SACK.left),
          right: v.getUint32(b + TCP_SACK.right),
          leftOffset: b + TCP_SACK.left,
          rightOffset: b + TCP_SACK.right,
        });
      }
    }
    options.push({ kind, offset: p, length });
    p += length;
  }
  const tcp: TcpSegment = {
    offset: o,
    srcPort: v.getUint16(o + TCP.srcPort),
    dstPort: v.getUint16(o + TCP.dstPort),
    seq: v.getUint32(o + TCP.seq),
    ack: v.getUint32(o + TCP.ack),
    flags: {
      fin: (flagBits & TCP_FLAG.fin) !== 0,
      syn: (flagBits & TCP_FLAG.syn) !== 0,
      rst: (flagBits & TCP_FLAG.rst) !== 0,
      psh: (flagBits & TCP_FLAG.psh) !== 0,
      ack: (flagBits & TCP_FLAG.ack) !== 0,
      urg: (flagBits & TCP_FLAG.urg) !== 0,
    },
    flagBits,
    headerLength,
    window: v.getUint16(o + TCP.window),
    checksum: v.getUint16(o + TCP.checksum),
    urgentPointer: v.getUint16(o + TCP.urgentPointer),
    options,
    sack,
    payloadOffset: optionsEnd,
    payload: frame.subarray(optionsEnd, end),
  };
  if (timestamps) tcp.timestamps = timestamps;
  return { kind: "tcp", eth, ip, tcp };
}

function parseUdp(v: DataView, eth: EthernetHeader, ip: Ipv4Header): Packet {
  const o = ip.payloadOffset;
  if (ip.payload.length < UDP.headerLength) return other("UDP header truncated", true, eth);
  const length = v.getUint16(o + UDP.length);
  if (length < UDP.headerLength || length > ip.payload.length) {
    return other(`UDP length ${length} does not fit the IP payload of ${ip.payload.length} octets`, true, eth);
  }
  return {
    kind: "udp",
    eth,
    ip,
    udp: {
      offset: o,
      srcPort: v.getUint16(o + UDP.srcPort),
      dstPort: v.getUint16(o + UDP.dstPort),
      length,
      checksum: v.getUint16(o + UDP.checksum),
      payload: ip.payload.subarray(UDP.headerLength, length),
    },
  };
}

function parseIcmp(v: DataView, eth: EthernetHeader, ip: Ipv4Header): Packet {
  const o = ip.payloadOffset;
  if (ip.payload.length < ICMP.headerLength) return other("ICMP header truncated", true, eth);
  const type = v.getUint8(o + ICMP.type);
  const icmp: IcmpMessage = {
    offset: o,
    type,
    code: v.getUint8(o + ICMP.code),
    checksum: v.getUint16(o + ICMP.checksum),
    restOfHeader: ip.payload.subarray(ICMP.restOfHeader, ICMP.headerLength),
    data: ip.payload.subarray(ICMP.headerLength),
    message: ip.payload,
  };
  if (type === ICMP_TYPE.echoReply || type === ICMP_TYPE.echoRequest) icmp.identifier = v.getUint16(o + ICMP.identifier);
  return { kind: "icmp", eth, ip, icmp };
}

// ---------------------------------------------------------------------------
// Checksums (RFC 1071).

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

// ---------------------------------------------------------------------------
// Sequence-number arithmetic (RFC 1982 serial numbers, 32 bits).

export const SEQ_MODULUS = 2 ** 32;

/** a - b as a signed 32-bit distance. */
export function seqDiff(a: number, b: number): number {
  return (a - b) | 0;
}

/** a + n mod 2^32. */
export function seqAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}

/** a >= b in serial-number order. */
export function seqGte(a: number, b: number): boolean {
  return seqDiff(a, b) >= 0;
}

/** a > b in serial-number order. */
export function seqGt(a: number, b: number): boolean {
  return seqDiff(a, b) > 0;
}

/** Sequence units a TCP segment occupies: SYN and FIN count one each (RFC 793 §3.3). */
export function segmentLength(tcp: TcpSegment): number {
  return tcp.payload.length + (tcp.flags.syn ? 1 : 0) + (tcp.flags.fin ? 1 : 0);
}
