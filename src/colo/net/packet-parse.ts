/**
 * One parse of an Ethernet II frame into a `Packet` (packet-types.ts).
 * Parsing never throws: anything truncated or inconsistent becomes
 * `{ kind: "other", malformed: true, reason }`, and anything we do not look
 * into (non-IP EtherTypes) becomes `{ kind: "other", malformed: false }`.
 * IPv4 fragments are plain `ipv4`; TCP options are listed, with the
 * timestamps and SACK blocks decoded. Checksums are not validated
 * (checksum.ts says why).
 */
import { formatIpv4, formatMac } from "./address.js";
import {
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
import type { EthernetHeader, IcmpMessage, Ipv4Header, Packet, TcpOption, TcpSackBlock, TcpSegment, TcpTimestamps } from "./packet-types.js";

/** A DataView over the frame's own bytes (also used by checksum.ts to write the fields). */
export function view(frame: Uint8Array): DataView {
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
