/**
 * Byte layouts of the headers the proxy reads (COLO-PROTOCOL.md §6): each
 * field's offset relative to the start of its header, as named constants
 * with the RFC that defines it, and the type, flag and option values we
 * look at. Ethernet II without FCS or VLAN tag, ARP, IPv4, TCP (with the
 * timestamps and SACK options), UDP, ICMP.
 */

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
