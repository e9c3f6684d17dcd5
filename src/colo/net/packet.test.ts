import { test } from "node:test";
import assert from "node:assert/strict";
import {
  ETHERNET,
  IP_PROTOCOL,
  TCP,
  checkChecksums,
  fixChecksums,
  formatIpv4,
  icmpChecksum,
  internetChecksum,
  ipv4HeaderChecksum,
  onesComplementSum,
  parseFrame,
  parseIpv4,
  segmentLength,
  seqAdd,
  seqDiff,
  seqGt,
  seqGte,
  tcpChecksum,
  udpChecksum,
} from "./packet.js";
import { GUEST_IP, PEER_IP, arpFrame, icmpFrame, ipv4Frame, ipv6Frame, pattern, tcpFrame, udpFrame } from "./testing.js";

test("checksum: RFC 1071 §3 example (00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2)", () => {
  const bytes = Uint8Array.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
  assert.equal(onesComplementSum(bytes), 0xddf2);
  assert.equal(internetChecksum(bytes), 0x220d);
  // Odd length: the last octet is padded with zero on the right.
  assert.equal(onesComplementSum(Uint8Array.from([0x01, 0x02, 0x03])), 0x0402);
});

test("checksum: a known IPv4 header (192.168.0.1 > 192.168.0.199, UDP) carries 0xb861", () => {
  const header = [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7];
  const frame = new Uint8Array(ETHERNET.headerLength + 0x73);
  frame[12] = 0x08;
  frame.set(header, ETHERNET.headerLength);
  new DataView(frame.buffer).setUint16(14 + 20 + 4, 0x73 - 20); // UDP length: the rest of the packet
  const p = parseFrame(frame);
  assert.ok(p.kind === "udp");
  assert.equal(ipv4HeaderChecksum(frame, p.ip), 0xb861);
  assert.equal(p.ip.srcText, "192.168.0.1");
  assert.equal(p.ip.dstText, "192.168.0.199");
  // Summing the header with its checksum in place gives all ones.
  assert.equal(internetChecksum(frame, 14, 34), 0);
});

test("checksum: TCP over the pseudo-header, computed by hand", () => {
  // 10.0.0.1:1 > 10.0.0.2:2, seq 0, ack 0, data offset 5, SYN, window 0x1000, no options, no data.
  // Pseudo-header: 0a00 + 0001 + 0a00 + 0002 + 0006 + 0014 = 0x141d
  // TCP header:    0001 + 0002 + 0 + 0 + 0 + 0 + 5002 + 1000 + 0 + 0 = 0x6005
  // Sum 0x7422, complement 0x8bdd.
  const frame = tcpFrame({ src: "10.0.0.1", dst: "10.0.0.2", sport: 1, dport: 2, seq: 0, flags: "S", window: 0x1000 });
  const p = parseFrame(frame);
  assert.equal(p.kind, "tcp");
  if (p.kind !== "tcp") return;
  assert.equal(p.tcp.checksum, 0x8bdd);
  assert.equal(tcpChecksum(frame, p.ip, p.tcp), 0x8bdd);
  assert.deepEqual(checkChecksums(frame), { ipv4: true, transport: true });
});

test("checksum: fixChecksums repairs in place after an edit; a flipped octet is detected", () => {
  const frame = tcpFrame({ seq: 1000, ack: 2000, flags: "PA", payload: pattern(333), ts: { val: 1, ecr: 2 } });
  assert.deepEqual(checkChecksums(frame), { ipv4: true, transport: true });
  frame[frame.length - 1] ^= 0xff;
  assert.deepEqual(checkChecksums(frame), { ipv4: true, transport: false });
  new DataView(frame.buffer).setUint8(ETHERNET.headerLength + 8, 3); // TTL
  assert.deepEqual(checkChecksums(frame), { ipv4: false, transport: false });
  assert.equal(fixChecksums(frame), true);
  assert.deepEqual(checkChecksums(frame), { ipv4: true, transport: true });
  assert.equal(fixChecksums(arpFrame()), false);
});

test("checksum: UDP and ICMP builders produce valid checksums", () => {
  const u = udpFrame({ payload: "hello, odd length" });
  assert.deepEqual(checkChecksums(u), { ipv4: true, transport: true });
  const up = parseFrame(u);
  assert.ok(up.kind === "udp");
  assert.equal(udpChecksum(u, up.ip, up.udp), up.udp.checksum);
  const i = icmpFrame({ data: "ping data" });
  const ip = parseFrame(i);
  assert.ok(ip.kind === "icmp");
  assert.equal(icmpChecksum(i, ip.icmp), ip.icmp.checksum);
  assert.deepEqual(checkChecksums(i), { ipv4: true, transport: true });
});

test("parse: Ethernet, IPv4 fields and TCP with MSS, SACK-permitted, timestamps, window scale", () => {
  const frame = tcpFrame({
    seq: 0xfffffff0,
    ack: 0x12345678,
    flags: "SA",
    window: 29200,
    mss: 1460,
    sackPermitted: true,
    ts: { val: 0xdeadbeef, ecr: 0x01020304 },
    windowScale: 7,
    id: 0xabcd,
    ttl: 63,
  });
  const p = parseFrame(frame);
  assert.equal(p.kind, "tcp");
  if (p.kind !== "tcp") return;
  assert.deepEqual(p.eth, { dst: "52:54:00:ab:cd:ef", src: "52:54:00:12:34:56", ethertype: 0x0800 });
  assert.equal(p.ip.id, 0xabcd);
  assert.equal(p.ip.ttl, 63);
  assert.equal(p.ip.dontFragment, true);
  assert.equal(p.ip.moreFragments, false);
  assert.equal(p.ip.protocol, IP_PROTOCOL.tcp);
  assert.equal(p.ip.src, parseIpv4(GUEST_IP));
  assert.equal(p.ip.dstText, PEER_IP);
  assert.equal(p.tcp.srcPort, 6379);
  assert.equal(p.tcp.dstPort, 41000);
  assert.equal(p.tcp.seq, 0xfffffff0);
  assert.equal(p.tcp.ack, 0x12345678);
  assert.deepEqual(p.tcp.flags, { fin: false, syn: true, rst: false, psh: false, ack: true, urg: false });
  assert.equal(p.tcp.window, 29200);
  assert.equal(p.tcp.headerLength, 20 + 4 + 4 + 12 + 4);
  assert.deepEqual(
    p.tcp.options.map((o) => o.kind),
    [2, 1, 1, 4, 1, 1, 8, 1, 3],
  );
  assert.ok(p.tcp.timestamps);
  const v = new DataView(frame.buffer);
  assert.equal(p.tcp.timestamps.tsval, 0xdeadbeef);
  assert.equal(p.tcp.timestamps.tsecr, 0x01020304);
  assert.equal(v.getUint32(p.tcp.timestamps.tsvalOffset), 0xdeadbeef);
  assert.equal(v.getUint32(p.tcp.timestamps.tsecrOffset), 0x01020304);
  assert.equal(p.tcp.payload.length, 0);
  assert.equal(segmentLength(p.tcp), 1);
});

test("parse: SACK blocks with their offsets; payload view", () => {
  const frame = tcpFrame({ seq: 5, ack: 9, flags: "A", sack: [[100, 200], [0xfffffff0, 16]], payload: "xyz" });
  const p = parseFrame(frame);
  assert.ok(p.kind === "tcp");
  assert.deepEqual(
    p.tcp.sack.map((b) => [b.left, b.right]),
    [
      [100, 200],
      [0xfffffff0, 16],
    ],
  );
  const v = new DataView(frame.buffer);
  for (const b of p.tcp.sack) {
    assert.equal(v.getUint32(b.leftOffset), b.left);
    assert.equal(v.getUint32(b.rightOffset), b.right);
  }
  assert.equal(new TextDecoder().decode(p.tcp.payload), "xyz");
  assert.equal(p.tcp.payloadOffset + 3, frame.length);
});

test("parse: Ethernet padding beyond the IPv4 total length is not payload", () => {
  const frame = udpFrame({ payload: "ab", pad: true });
  assert.equal(frame.length, 60);
  frame.fill(0xee, 14 + 20 + 8 + 2); // garbage in the padding
  const p = parseFrame(frame);
  assert.ok(p.kind === "udp");
  assert.equal(p.ip.totalLength, 30);
  assert.deepEqual([...p.udp.payload], [0x61, 0x62]);
  assert.deepEqual(checkChecksums(frame), { ipv4: true, transport: true });
  const t = tcpFrame({ seq: 1, flags: "A", pad: true });
  const tp = parseFrame(t);
  assert.ok(tp.kind === "tcp");
  assert.equal(tp.tcp.payload.length, 0);
});

test("parse: UDP, ICMP echo (with identifier) and ICMP error, ARP, IPv6, other EtherType, other protocol, fragment", () => {
  const u = parseFrame(udpFrame({ sport: 1234, dport: 53, payload: "q" }));
  assert.ok(u.kind === "udp");
  assert.equal(u.udp.srcPort, 1234);
  assert.equal(u.udp.length, 9);
  const e = parseFrame(icmpFrame({ type: 8, identifier: 77, sequence: 3, data: "abc" }));
  assert.ok(e.kind === "icmp");
  assert.equal(e.icmp.identifier, 77);
  assert.equal(e.icmp.data.length, 3);
  assert.equal(e.icmp.restOfHeader.length, 4);
  const unreachable = parseFrame(icmpFrame({ type: 3, code: 3, identifier: 0, data: pattern(28) }));
  assert.ok(unreachable.kind === "icmp");
  assert.equal(unreachable.icmp.identifier, undefined);
  const a = parseFrame(arpFrame({ operation: 2 }));
  assert.ok(a.kind === "arp");
  assert.equal(a.arp.operation, 2);
  assert.equal(formatIpv4(a.arp.senderIp), GUEST_IP);
  assert.equal(a.arp.senderMac, "52:54:00:12:34:56");
  assert.equal(parseFrame(ipv6Frame()).kind, "ipv6");
  const lldp = ipv6Frame();
  lldp[12] = 0x88;
  lldp[13] = 0xcc;
  const l = parseFrame(lldp);
  assert.ok(l.kind === "other");
  assert.equal(l.malformed, false);
  const gre = parseFrame(ipv4Frame({}, 47, pattern(10)));
  assert.ok(gre.kind === "ipv4");
  assert.equal(gre.ip.protocol, 47);
  const fragment = parseFrame(ipv4Frame({ flagsFragment: 0x2000 }, IP_PROTOCOL.tcp, pattern(8)));
  assert.ok(fragment.kind === "ipv4");
  assert.equal(fragment.ip.moreFragments, true);
  const later = parseFrame(ipv4Frame({ flagsFragment: 185 }, IP_PROTOCOL.udp, pattern(8)));
  assert.ok(later.kind === "ipv4");
  assert.equal(later.ip.fragmentOffset, 185 * 8);
});

test("parse: every truncation of a frame is classified, never thrown", () => {
  const ipFrames = [
    tcpFrame({ seq: 1, flags: "PA", payload: pattern(40), ts: { val: 1, ecr: 2 }, sack: [[1, 2]] }),
    udpFrame({ payload: pattern(20) }),
    icmpFrame({ data: pattern(12) }),
  ];
  for (const frame of ipFrames) {
    for (let n = 0; n < frame.length; n++) {
      const p = parseFrame(frame.subarray(0, n));
      assert.ok(p.kind === "other" && p.malformed, `IPv4 frame cut to ${n} octets`);
    }
  }
  const arp = arpFrame();
  for (let n = 0; n <= arp.length; n++) {
    const p = parseFrame(arp.subarray(0, n));
    // 14 + 28 octets carry the ARP packet; the rest is Ethernet padding.
    if (n < 42) assert.ok(p.kind === "other" && p.malformed, `ARP frame cut to ${n} octets`);
    else assert.equal(p.kind, "arp");
  }
});

test("parse: inconsistent headers are malformed", () => {
  const malformed = (frame: Uint8Array, why: string): void => {
    const p = parseFrame(frame);
    assert.ok(p.kind === "other" && p.malformed, why);
  };
  const base = (): Uint8Array => tcpFrame({ seq: 1, flags: "A", payload: pattern(10) });
  const ihl = base();
  ihl[14] = 0x44;
  malformed(ihl, "IHL 4");
  const version = base();
  version[14] = 0x65;
  malformed(version, "version 6 in an IPv4 frame");
  const total = base();
  new DataView(total.buffer).setUint16(16, 10);
  malformed(total, "total length below the header");
  const long = base();
  new DataView(long.buffer).setUint16(16, 500);
  malformed(long, "total length beyond the frame");
  const dataOffset = base();
  dataOffset[14 + 20 + TCP.dataOffset] = 0x40;
  malformed(dataOffset, "TCP data offset 16");
  const bigOffset = base();
  bigOffset[14 + 20 + TCP.dataOffset] = 0xf0;
  malformed(bigOffset, "TCP data offset past the segment");
  const option = tcpFrame({ seq: 1, mss: 1460 });
  option[14 + 20 + 21] = 9; // MSS length 9 runs past the header
  malformed(option, "option length");
  const zeroLength = tcpFrame({ seq: 1, mss: 1460 });
  zeroLength[14 + 20 + 21] = 0;
  malformed(zeroLength, "option length 0");
  const ts = tcpFrame({ seq: 1, ts: { val: 1, ecr: 1 } });
  ts[14 + 20 + 23] = 8; // timestamps option with length 8
  malformed(ts, "timestamps length");
  const udp = udpFrame({ payload: "abc" });
  new DataView(udp.buffer).setUint16(14 + 20 + 4, 100);
  malformed(udp, "UDP length past the packet");
  const udpShort = udpFrame({ payload: "abc" });
  new DataView(udpShort.buffer).setUint16(14 + 20 + 4, 4);
  malformed(udpShort, "UDP length below its header");
  malformed(ipv4Frame({}, IP_PROTOCOL.icmp, pattern(4)), "ICMP header truncated");
  const arp = arpFrame();
  arp[14 + 5] = 16;
  malformed(arp, "ARP for IPv6 addresses");
});

test("addresses and sequence arithmetic mod 2^32", () => {
  assert.equal(parseIpv4("10.77.0.10"), 0x0a4d000a);
  assert.equal(parseIpv4("256.0.0.1"), undefined);
  assert.equal(parseIpv4("1.2.3"), undefined);
  assert.equal(formatIpv4(0xc0a800c7), "192.168.0.199");
  assert.equal(seqAdd(0xffffffff, 2), 1);
  assert.equal(seqAdd(1, -2), 0xffffffff);
  assert.equal(seqDiff(1, 0xffffffff), 2);
  assert.equal(seqDiff(0xffffffff, 1), -2);
  assert.ok(seqGte(5, 0xfffffff0));
  assert.ok(!seqGte(0xfffffff0, 5));
  assert.ok(seqGte(7, 7));
  assert.ok(!seqGt(7, 7));
  assert.ok(seqGt(0x80000000 - 1, 0));
});
