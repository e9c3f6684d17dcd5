/**
 * Frame builders for the proxy's tests: Ethernet II frames carrying ARP,
 * IPv4 (TCP, UDP, ICMP, any protocol) or IPv6, with correct checksums.
 * Layouts come from packet.ts, checksums from its RFC 1071 code (tested on
 * its own against hand-computed values).
 */
import {
  ARP,
  ETHERNET,
  ETHERTYPE,
  ICMP,
  IP_PROTOCOL,
  IPV4,
  TCP,
  TCP_FLAG,
  TCP_OPTION,
  TCP_TIMESTAMPS,
  UDP,
  fixChecksums,
  parseIpv4,
} from "./packet.js";

export const GUEST_MAC = "52:54:00:12:34:56";
export const PEER_MAC = "52:54:00:ab:cd:ef";
export const GUEST_IP = "10.77.0.10";
export const PEER_IP = "10.77.0.2";

function macBytes(mac: string): Uint8Array {
  const parts = mac.split(":").map((h) => Number.parseInt(h, 16));
  if (parts.length !== 6 || parts.some((n) => !(n >= 0 && n <= 255))) throw new Error(`testing: bad MAC ${mac}`);
  return Uint8Array.from(parts);
}

function ipValue(text: string): number {
  const value = parseIpv4(text);
  if (value === undefined) throw new Error(`testing: bad IPv4 address ${text}`);
  return value;
}

export function bytes(content: string | Uint8Array | number[]): Uint8Array {
  if (typeof content === "string") return new TextEncoder().encode(content);
  return content instanceof Uint8Array ? content : Uint8Array.from(content);
}

/** `n` octets of a repeatable pattern starting at stream position `from`. */
export function pattern(n: number, from = 0, salt = 0): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = ((from + i) * 31 + salt + ((from + i) >> 8)) & 0xff;
  return out;
}

export interface EthernetSpec {
  srcMac?: string;
  dstMac?: string;
  /** Pad the frame to the 60-octet Ethernet minimum (without FCS). */
  pad?: boolean;
}

export interface Ipv4Spec extends EthernetSpec {
  src?: string;
  dst?: string;
  id?: number;
  ttl?: number;
  /** Raw flags/fragment-offset field. */
  flagsFragment?: number;
}

const ETHERNET_MIN_FRAME = 60;

function ethernet(spec: EthernetSpec, ethertype: number, body: Uint8Array): Uint8Array {
  const length = Math.max(ETHERNET.headerLength + body.length, spec.pad ? ETHERNET_MIN_FRAME : 0);
  const frame = new Uint8Array(length);
  frame.set(macBytes(spec.dstMac ?? PEER_MAC), ETHERNET.dst);
  frame.set(macBytes(spec.srcMac ?? GUEST_MAC), ETHERNET.src);
  new DataView(frame.buffer).setUint16(ETHERNET.ethertype, ethertype);
  frame.set(body, ETHERNET.headerLength);
  return frame;
}

/** An IPv4 packet (20-octet header) around `payload`, checksums filled in. */
export function ipv4Frame(spec: Ipv4Spec, protocol: number, payload: Uint8Array): Uint8Array {
  const packet = new Uint8Array(IPV4.minHeaderLength + payload.length);
  const v = new DataView(packet.buffer);
  v.setUint8(IPV4.versionIhl, (IPV4.version << 4) | (IPV4.minHeaderLength / IPV4.ihlUnit));
  v.setUint16(IPV4.totalLength, packet.length);
  v.setUint16(IPV4.id, spec.id ?? 1);
  v.setUint16(IPV4.flagsFragment, spec.flagsFragment ?? 0x4000);
  v.setUint8(IPV4.ttl, spec.ttl ?? 64);
  v.setUint8(IPV4.protocol, protocol);
  v.setUint32(IPV4.src, ipValue(spec.src ?? GUEST_IP));
  v.setUint32(IPV4.dst, ipValue(spec.dst ?? PEER_IP));
  packet.set(payload, IPV4.minHeaderLength);
  const frame = ethernet(spec, ETHERTYPE.ipv4, packet);
  fixChecksums(frame);
  return frame;
}

export interface TcpSpec extends Ipv4Spec {
  sport?: number;
  dport?: number;
  seq: number;
  ack?: number;
  /** Letters: S SYN, A ACK, F FIN, R RST, P PSH, U URG. */
  flags?: string;
  window?: number;
  mss?: number;
  windowScale?: number;
  sackPermitted?: boolean;
  ts?: { val: number; ecr: number };
  sack?: Array<[number, number]>;
  payload?: string | Uint8Array | number[];
}

const FLAG_LETTERS: Record<string, number> = {
  S: TCP_FLAG.syn,
  A: TCP_FLAG.ack,
  F: TCP_FLAG.fin,
  R: TCP_FLAG.rst,
  P: TCP_FLAG.psh,
  U: TCP_FLAG.urg,
};

function tcpOptions(spec: TcpSpec): number[] {
  const o: number[] = [];
  if (spec.mss !== undefined) o.push(TCP_OPTION.maxSegmentSize, 4, spec.mss >> 8, spec.mss & 0xff);
  if (spec.sackPermitted) o.push(TCP_OPTION.noOperation, TCP_OPTION.noOperation, TCP_OPTION.sackPermitted, 2);
  if (spec.ts) {
    const ts = new Uint8Array(TCP_TIMESTAMPS.length);
    const v = new DataView(ts.buffer);
    v.setUint8(0, TCP_OPTION.timestamps);
    v.setUint8(1, TCP_TIMESTAMPS.length);
    v.setUint32(TCP_TIMESTAMPS.tsval, spec.ts.val >>> 0);
    v.setUint32(TCP_TIMESTAMPS.tsecr, spec.ts.ecr >>> 0);
    o.push(TCP_OPTION.noOperation, TCP_OPTION.noOperation, ...ts);
  }
  if (spec.windowScale !== undefined) o.push(TCP_OPTION.noOperation, TCP_OPTION.windowScale, 3, spec.windowScale);
  if (spec.sack && spec.sack.length > 0) {
    const s = new Uint8Array(2 + 8 * spec.sack.length);
    const v = new DataView(s.buffer);
    v.setUint8(0, TCP_OPTION.sack);
    v.setUint8(1, s.length);
    spec.sack.forEach(([left, right], i) => {
      v.setUint32(2 + 8 * i, left >>> 0);
      v.setUint32(6 + 8 * i, right >>> 0);
    });
    o.push(TCP_OPTION.noOperation, TCP_OPTION.noOperation, ...s);
  }
  while (o.length % 4 !== 0) o.push(TCP_OPTION.endOfList);
  return o;
}

export function tcpFrame(spec: TcpSpec): Uint8Array {
  const options = tcpOptions(spec);
  const payload = bytes(spec.payload ?? new Uint8Array(0));
  const headerLength = TCP.minHeaderLength + options.length;
  const segment = new Uint8Array(headerLength + payload.length);
  const v = new DataView(segment.buffer);
  let flagBits = 0;
  for (const letter of spec.flags ?? "A") {
    const bit = FLAG_LETTERS[letter];
    if (bit === undefined) throw new Error(`testing: unknown TCP flag letter ${letter}`);
    flagBits |= bit;
  }
  v.setUint16(TCP.srcPort, spec.sport ?? 6379);
  v.setUint16(TCP.dstPort, spec.dport ?? 41000);
  v.setUint32(TCP.seq, spec.seq >>> 0);
  v.setUint32(TCP.ack, (spec.ack ?? 0) >>> 0);
  v.setUint8(TCP.dataOffset, (headerLength / TCP.dataOffsetUnit) << 4);
  v.setUint8(TCP.flags, flagBits);
  v.setUint16(TCP.window, spec.window ?? 64240);
  segment.set(options, TCP.minHeaderLength);
  segment.set(payload, headerLength);
  return ipv4Frame(spec, IP_PROTOCOL.tcp, segment);
}

export interface UdpSpec extends Ipv4Spec {
  sport?: number;
  dport?: number;
  payload?: string | Uint8Array | number[];
}

export function udpFrame(spec: UdpSpec): Uint8Array {
  const payload = bytes(spec.payload ?? new Uint8Array(0));
  const datagram = new Uint8Array(UDP.headerLength + payload.length);
  const v = new DataView(datagram.buffer);
  v.setUint16(UDP.srcPort, spec.sport ?? 5353);
  v.setUint16(UDP.dstPort, spec.dport ?? 53);
  v.setUint16(UDP.length, datagram.length);
  v.setUint16(UDP.checksum, 1); // non-zero: fixChecksums computes it
  datagram.set(payload, UDP.headerLength);
  return ipv4Frame(spec, IP_PROTOCOL.udp, datagram);
}

export interface IcmpSpec extends Ipv4Spec {
  type?: number;
  code?: number;
  identifier?: number;
  sequence?: number;
  data?: string | Uint8Array | number[];
}

export function icmpFrame(spec: IcmpSpec): Uint8Array {
  const data = bytes(spec.data ?? new Uint8Array(0));
  const message = new Uint8Array(ICMP.headerLength + data.length);
  const v = new DataView(message.buffer);
  v.setUint8(ICMP.type, spec.type ?? 8);
  v.setUint8(ICMP.code, spec.code ?? 0);
  v.setUint16(ICMP.identifier, spec.identifier ?? 0x1234);
  v.setUint16(ICMP.sequence, spec.sequence ?? 1);
  message.set(data, ICMP.headerLength);
  return ipv4Frame(spec, IP_PROTOCOL.icmp, message);
}

export interface ArpSpec extends EthernetSpec {
  operation?: number;
  senderIp?: string;
  targetIp?: string;
  targetMac?: string;
}

export function arpFrame(spec: ArpSpec = {}): Uint8Array {
  const body = new Uint8Array(ARP.length);
  const v = new DataView(body.buffer);
  v.setUint16(ARP.hardwareType, ARP.hardwareEthernet);
  v.setUint16(ARP.protocolType, ETHERTYPE.ipv4);
  v.setUint8(ARP.hardwareLength, ETHERNET.macLength);
  v.setUint8(ARP.protocolLength, 4);
  v.setUint16(ARP.operation, spec.operation ?? 1);
  body.set(macBytes(spec.srcMac ?? GUEST_MAC), ARP.senderMac);
  v.setUint32(ARP.senderIp, ipValue(spec.senderIp ?? GUEST_IP));
  body.set(macBytes(spec.targetMac ?? "00:00:00:00:00:00"), ARP.targetMac);
  v.setUint32(ARP.targetIp, ipValue(spec.targetIp ?? PEER_IP));
  return ethernet({ dstMac: "ff:ff:ff:ff:ff:ff", pad: true, ...spec }, ETHERTYPE.arp, body);
}

/** An IPv6 frame: only its EtherType matters to the proxy. */
export function ipv6Frame(spec: EthernetSpec = {}): Uint8Array {
  const body = new Uint8Array(40);
  body[0] = 0x60;
  return ethernet(spec, ETHERTYPE.ipv6, body);
}

/** The frame a peer sends to the guest: swaps the defaults' direction. */
export function toGuest<T extends Ipv4Spec & { sport?: number; dport?: number }>(spec: T): T {
  return { src: PEER_IP, dst: GUEST_IP, srcMac: PEER_MAC, dstMac: GUEST_MAC, sport: 41000, dport: 6379, ...spec };
}
