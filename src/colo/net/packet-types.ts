/**
 * The typed value a frame is parsed into (packet-parse.ts): `Packet`, one
 * variant per kind (ARP, IPv6, IPv4 with TCP/UDP/ICMP/other, or `other`),
 * and the headers it carries. Every offset in it is absolute (from the
 * start of the frame), so a copy of the frame can be rewritten in place
 * through them.
 */

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
