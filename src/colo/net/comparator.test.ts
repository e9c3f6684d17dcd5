import { test } from "node:test";
import assert from "node:assert/strict";
import { Comparator, type ComparatorOptions, type CompareResult, DEFAULT_COMPARE_TIMEOUT_MS } from "./comparator.js";
import { parseFrame, seqAdd } from "./packet.js";
import { arpFrame, icmpFrame, ipv4Frame, ipv6Frame, pattern, tcpFrame, udpFrame } from "./testing.js";

/** The guest's stream: octet at position i (from the first data octet) is pattern(…, i). */
const ISN = 1_000_000;
const PEER_ACK = 5000;

interface SegmentSpec {
  flags?: string;
  ack?: number;
  isn?: number;
  sport?: number;
}

/** A PVM segment carrying stream octets [from, to) (positions from ISN + 1). */
function pvm(from: number, to: number, spec: SegmentSpec = {}): Uint8Array {
  const isn = spec.isn ?? ISN;
  return tcpFrame({
    seq: seqAdd(isn, 1 + from),
    ack: spec.ack ?? PEER_ACK,
    flags: spec.flags ?? "PA",
    payload: pattern(to - from, from),
    sport: spec.sport ?? 6379,
    id: 100 + from,
    window: 1000,
    ts: { val: 11111, ecr: 22222 },
  });
}

/** The same from the SVM, already rewritten: only header fields the comparator ignores differ. */
function svm(from: number, to: number, spec: SegmentSpec & { salt?: number } = {}): Uint8Array {
  const isn = spec.isn ?? ISN;
  return tcpFrame({
    seq: seqAdd(isn, 1 + from),
    ack: spec.ack ?? PEER_ACK,
    flags: spec.flags ?? "PA",
    payload: pattern(to - from, from, spec.salt ?? 0),
    sport: spec.sport ?? 6379,
    id: 40000 + from,
    ttl: 32,
    window: 4321,
    ts: { val: 99999, ecr: 22222 },
  });
}

function released(r: CompareResult): Uint8Array[] {
  assert.equal(r.divergence, undefined, r.divergence?.detail);
  return r.release;
}

function small(options: Partial<ComparatorOptions> = {}): Comparator {
  return new Comparator({ compareTimeoutMs: 1000, maxHeldFrames: 64, maxHeldBytes: 1 << 20, maxSecondaryBytes: 1 << 20, ...options });
}

test("comparator: equal segments release on the second side, whichever comes first", () => {
  const c = small();
  const a = pvm(0, 100);
  assert.deepEqual(released(c.primary(a, 0)), []);
  assert.deepEqual(released(c.secondary(svm(0, 100), 1)), [a]);
  const b = pvm(100, 200);
  assert.deepEqual(released(c.secondary(svm(100, 200), 2)), []);
  assert.deepEqual(released(c.primary(b, 3)), [b]);
  const s = c.stats();
  assert.equal(s.releasedMatched, 2);
  assert.equal(s.heldFrames, 0);
  assert.equal(s.heldBytes, 0);
  assert.equal(s.secondaryQueuedBytes, 0);
  assert.equal(c.expired(10_000), undefined);
});

test("comparator: re-segmented streams match (3000 vs 1500+1500, 1500+1500 vs 3000, odd splits)", () => {
  const c = small();
  const big = pvm(0, 3000);
  assert.deepEqual(released(c.primary(big, 0)), []);
  assert.deepEqual(released(c.secondary(svm(0, 1500), 0)), []);
  assert.deepEqual(released(c.secondary(svm(1500, 3000), 0)), [big]);

  const p1 = pvm(3000, 4500);
  const p2 = pvm(4500, 6000);
  assert.deepEqual(released(c.primary(p1, 0)), []);
  assert.deepEqual(released(c.primary(p2, 0)), []);
  assert.deepEqual(released(c.secondary(svm(3000, 6000), 0)), [p1, p2]);

  // PVM 6000-6700-8000-9000, SVM 6000-7000-7999-9000: partial overlaps everywhere.
  const q1 = pvm(6000, 6700);
  const q2 = pvm(6700, 8000);
  const q3 = pvm(8000, 9000);
  for (const q of [q1, q2, q3]) assert.deepEqual(released(c.primary(q, 0)), []);
  assert.deepEqual(released(c.secondary(svm(6000, 7000), 0)), [q1]);
  assert.deepEqual(released(c.secondary(svm(7000, 7999), 0)), []);
  assert.deepEqual(released(c.secondary(svm(7999, 9000), 0)), [q2, q3]);
  assert.equal(c.stats().secondaryQueuedBytes, 0);
  assert.equal(c.stats().releasedMatched, 6);
});

test("comparator: SVM ahead, then PVM ahead", () => {
  const c = small();
  for (let i = 0; i < 5; i++) assert.deepEqual(released(c.secondary(svm(i * 100, i * 100 + 100), 0)), []);
  assert.equal(c.stats().secondaryQueuedBytes, 500);
  const p = pvm(0, 250);
  assert.deepEqual(released(c.primary(p, 0)), [p]);
  const q = pvm(250, 500);
  assert.deepEqual(released(c.primary(q, 0)), [q]);
  assert.equal(c.stats().secondaryQueuedBytes, 0);
  const later = [pvm(500, 600), pvm(600, 700), pvm(700, 800)];
  for (const f of later) assert.deepEqual(released(c.primary(f, 0)), []);
  assert.deepEqual(released(c.secondary(svm(500, 650), 0)), [later[0]]);
  assert.deepEqual(released(c.secondary(svm(650, 800), 0)), [later[1], later[2]]);
});

test("comparator: reordered SVM segments (later range first) still compare every octet", () => {
  const c = small();
  const a = pvm(0, 1000);
  const b = pvm(1000, 2000);
  released(c.primary(a, 0));
  released(c.primary(b, 0));
  assert.deepEqual(released(c.secondary(svm(1000, 2000), 0)), []);
  // Range 0-1000 is still compared: a wrong octet there is a divergence.
  const wrong = c.secondary(svm(0, 1000, { salt: 1 }), 0);
  assert.equal(wrong.divergence?.reason, "payload");

  const d = small();
  released(d.primary(a, 0));
  released(d.primary(b, 0));
  assert.deepEqual(released(d.secondary(svm(1000, 2000), 0)), []);
  assert.deepEqual(released(d.secondary(svm(0, 1000), 0)), [a, b]);

  // Both SVM segments, reversed, before the PVM's first: the earlier one is kept, not taken for old data.
  const e = small();
  released(e.secondary(svm(1000, 2000), 0));
  released(e.secondary(svm(0, 1000), 0));
  assert.deepEqual(released(e.primary(a, 0)), [a]);
  assert.deepEqual(released(e.primary(b, 0)), [b]);
  assert.equal(e.stats().secondaryQueuedBytes, 0);
});

test("comparator: differing payload is a 'payload' divergence naming the flow and position; reported once", () => {
  const c = small();
  const a = pvm(0, 100);
  released(c.primary(a, 0));
  const payload = pattern(100, 0);
  payload[42] ^= 0x01;
  const bad = tcpFrame({ seq: ISN + 1, ack: PEER_ACK, flags: "PA", payload });
  const r = c.secondary(bad, 5);
  assert.equal(r.divergence?.reason, "payload");
  assert.match(r.divergence?.detail ?? "", /^tcp 10\.77\.0\.10:6379>10\.77\.0\.2:41000 at seq 1000043: PVM 0x[0-9a-f]{2}, SVM 0x[0-9a-f]{2}$/);
  // The flow and the place, for status and the metrics page: no ISN seen, so the sequence number.
  assert.equal(r.divergence?.flow, "tcp 10.77.0.10:6379>10.77.0.2:41000");
  assert.equal(r.divergence?.seq, 1000043);
  assert.equal(r.divergence?.offset, undefined);
  assert.deepEqual(r.release, []);
  // Diverged: nothing leaves, no second report, SVM frames dropped.
  const b = pvm(100, 200);
  assert.deepEqual(c.primary(b, 6), { release: [] });
  assert.deepEqual(c.secondary(svm(100, 200), 6), { release: [] });
  const arp = arpFrame();
  assert.deepEqual(c.primary(arp, 6), { release: [] });
  assert.equal(c.expired(1_000_000), undefined);
  const s = c.stats();
  assert.equal(s.divergences.payload, 1);
  assert.equal(s.heldFrames, 3);
  assert.equal(s.droppedSecondary, 1);
  // The checkpoint releases everything in order and starts afresh.
  assert.deepEqual(c.checkpointed(), [a, b, arp]);
  assert.equal(c.stats().releasedAtCheckpoint, 3);
  const n = pvm(200, 300);
  released(c.primary(n, 7));
  assert.deepEqual(released(c.secondary(svm(200, 300), 7)), [n]);
});

test("comparator: a FIN at a different position is a 'length' divergence", () => {
  const c = small();
  released(c.primary(pvm(0, 100, { flags: "FPA" }), 0));
  const r = c.secondary(svm(0, 90, { flags: "FPA" }), 0);
  assert.equal(r.divergence?.reason, "length");
  assert.match(r.divergence?.detail ?? "", /PVM 0x[0-9a-f]{2}, SVM FIN/);

  const d = small();
  released(d.secondary(svm(0, 100, { flags: "FPA" }), 0));
  const r2 = d.primary(pvm(0, 120, { flags: "PA" }), 0);
  assert.equal(r2.divergence?.reason, "length");
  assert.match(r2.divergence?.detail ?? "", /PVM 0x[0-9a-f]{2}, SVM FIN/);

  // Same position: FIN matches FIN, data and FIN in different segments.
  const e = small();
  const data = pvm(0, 100);
  const fin = pvm(100, 100, { flags: "FA" });
  released(e.primary(data, 0));
  released(e.primary(fin, 0));
  assert.deepEqual(released(e.secondary(svm(0, 100, { flags: "FPA" }), 0)), [data, fin]);
});

test("comparator: a missing SVM frame is a 'timeout' from expired()", () => {
  const c = small({ compareTimeoutMs: 3000 });
  const a = pvm(0, 100);
  released(c.primary(a, 1000));
  assert.equal(c.expired(3999), undefined);
  assert.equal(c.expired(4000), undefined);
  const d = c.expired(4001);
  assert.equal(d?.reason, "timeout");
  assert.match(d?.detail ?? "", /^tcp 10\.77\.0\.10:6379>10\.77\.0\.2:41000 at seq 1000001: SVM has not sent 100 units/);
  assert.deepEqual({ flow: d?.flow, seq: d?.seq }, { flow: "tcp 10.77.0.10:6379>10.77.0.2:41000", seq: 1000001 });
  assert.equal(c.expired(5000), undefined);
  assert.equal(c.stats().divergences.timeout, 1);
  assert.deepEqual(c.checkpointed(), [a]);
  assert.equal(c.expired(100_000), undefined);
});

test("comparator: SVM data the PVM never sends is 'secondary-extra'", () => {
  const c = small({ compareTimeoutMs: 500 });
  released(c.secondary(svm(0, 100), 0));
  assert.equal(c.expired(500), undefined);
  const d = c.expired(501);
  assert.equal(d?.reason, "secondary-extra");
  assert.match(d?.detail ?? "", /^tcp .* SVM sent 100 units the PVM did not/);

  const u = small({ compareTimeoutMs: 500 });
  released(u.secondary(udpFrame({ payload: "x" }), 0));
  assert.equal(u.expired(501)?.reason, "secondary-extra");
});

test("comparator: held PVM frames past the limit are an 'overflow'; memory stays bounded", () => {
  const c = small({ maxHeldFrames: 4, maxHeldBytes: 1 << 20 });
  const frames = Array.from({ length: 20 }, (_, i) => pvm(i * 10, i * 10 + 10));
  const results = frames.map((f) => c.primary(f, 0));
  assert.deepEqual(
    results.map((r) => r.divergence?.reason),
    [undefined, undefined, undefined, undefined, "overflow", ...Array<undefined>(15).fill(undefined)],
  );
  const s = c.stats();
  assert.equal(s.heldFrames, 8); // hard cap: twice the limit
  assert.equal(s.droppedPrimaryOverflow, 12);
  assert.equal(s.divergences.overflow, 1);
  assert.deepEqual(c.checkpointed(), frames.slice(0, 8));

  const b = small({ maxHeldFrames: 1000, maxHeldBytes: 3000 });
  const big = Array.from({ length: 10 }, (_, i) => pvm(i * 1000, i * 1000 + 1000));
  assert.equal(big.map((f) => b.primary(f, 0)).filter((r) => r.divergence?.reason === "overflow").length, 1);
  assert.ok(b.stats().heldBytes <= 6000);

  const sv = small({ maxSecondaryBytes: 1000 });
  released(sv.secondary(svm(0, 600), 0));
  const over = sv.secondary(svm(600, 1200), 0);
  assert.equal(over.divergence?.reason, "overflow");
  assert.equal(sv.stats().secondaryQueuedBytes, 600);
  assert.equal(sv.stats().droppedSecondary, 1);
  for (let i = 0; i < 100; i++) sv.secondary(udpFrame({ payload: pattern(1000) }), 0);
  assert.equal(sv.stats().secondaryQueuedBytes, 600);
  sv.checkpointed();
  assert.equal(sv.stats().secondaryQueuedBytes, 0);

  const su = small({ maxSecondaryBytes: 100 });
  released(su.secondary(udpFrame({ payload: pattern(60) }), 0));
  assert.equal(su.secondary(udpFrame({ payload: pattern(60) }), 0).divergence?.reason, "overflow");
});

test("comparator: the flow table is bounded; idle flows are evicted, busy ones are an overflow", () => {
  const c = small({ maxFlows: 2 });
  for (let port = 1; port <= 5; port++) {
    const f = pvm(0, 10, { sport: port });
    released(c.primary(f, 0));
    assert.deepEqual(released(c.secondary(svm(0, 10, { sport: port }), 0)), [f]);
  }
  assert.equal(c.stats().flows, 2);
  assert.equal(c.stats().flowsEvicted, 3);
  released(c.secondary(svm(10, 20, { sport: 100 }), 0));
  released(c.secondary(svm(10, 20, { sport: 101 }), 0));
  assert.equal(c.secondary(svm(10, 20, { sport: 102 }), 0).divergence?.reason, "overflow");
});

test("comparator: a PVM segment waits until the SVM acknowledged as much; pure ACKs release on the SVM's ack", () => {
  const c = small();
  const data = pvm(0, 100, { ack: 7000 });
  released(c.primary(data, 0));
  // Same data, but the SVM has not received the peer's octets up to 7000 yet.
  assert.deepEqual(released(c.secondary(svm(0, 100, { ack: 6000 }), 0)), []);
  const pureAck = pvm(100, 100, { flags: "A", ack: 8000 });
  assert.deepEqual(released(c.primary(pureAck, 0)), []);
  assert.deepEqual(released(c.secondary(svm(100, 100, { flags: "A", ack: 7000 }), 0)), [data]);
  // A window update from the SVM with a higher ack covers the pure ACK.
  assert.deepEqual(released(c.secondary(svm(100, 100, { flags: "A", ack: 9000 }), 0)), [pureAck]);
  // Acks are compared mod 2^32.
  const w = small();
  const near = pvm(0, 0, { flags: "A", ack: 0xfffffff0 });
  const past = pvm(0, 0, { flags: "A", ack: 0x10 });
  released(w.primary(near, 0));
  released(w.primary(past, 0));
  assert.deepEqual(released(w.secondary(svm(0, 0, { flags: "A", ack: 0xfffffff8 }), 0)), [near]);
  assert.deepEqual(released(w.secondary(svm(0, 0, { flags: "A", ack: 0x20 }), 0)), [past]);
  assert.equal(w.stats().releasedMatched, 2);
});

test("comparator: retransmissions below the watermark: PVM released uncompared, SVM discarded", () => {
  const c = small({ compareTimeoutMs: 100 });
  const a = pvm(0, 1000);
  released(c.primary(a, 0));
  assert.deepEqual(released(c.secondary(svm(0, 1000), 0)), [a]);
  const again = pvm(0, 500);
  assert.deepEqual(released(c.primary(again, 1)), [again]);
  assert.deepEqual(released(c.secondary(svm(200, 700, { salt: 9 }), 1)), []);
  assert.equal(c.stats().secondaryQueuedBytes, 0);
  assert.equal(c.stats().releasedUncompared, 1);
  // Straddling the watermark: the part above it is compared.
  const straddle = pvm(900, 1100);
  assert.deepEqual(released(c.primary(straddle, 2)), []);
  assert.deepEqual(released(c.secondary(svm(1000, 1100), 2)), [straddle]);
  assert.equal(c.expired(10_000), undefined);
});

test("comparator: SYN-ACK with different ISNs: the SVM's SYN maps onto the PVM's", () => {
  const clientIsn = 777;
  const svmIsn = 0x9abcdef0;
  const pvmSynAck = tcpFrame({ seq: ISN, ack: clientIsn + 1, flags: "SA", mss: 1460, ts: { val: 5, ecr: 1 } });
  const svmSynAck = tcpFrame({ seq: svmIsn, ack: clientIsn + 1, flags: "SA", mss: 1460, ts: { val: 9, ecr: 1 } });
  for (const order of ["pvm-first", "svm-first"] as const) {
    const c = small();
    if (order === "pvm-first") {
      assert.deepEqual(released(c.primary(pvmSynAck, 0)), []);
      assert.deepEqual(released(c.secondary(svmSynAck, 0)), [pvmSynAck]);
    } else {
      assert.deepEqual(released(c.secondary(svmSynAck, 0)), []);
      assert.equal(c.stats().secondaryQueuedBytes, 1);
      assert.deepEqual(released(c.primary(pvmSynAck, 0)), [pvmSynAck]);
    }
    assert.equal(c.stats().secondaryQueuedBytes, 0);
    // The SVM's data is rewritten into the PVM's space from here on.
    const d = pvm(0, 50, { ack: clientIsn + 1 });
    released(c.primary(d, 0));
    assert.deepEqual(released(c.secondary(svm(0, 50, { ack: clientIsn + 1 }), 0)), [d]);
    // A retransmitted SVM SYN-ACK (rewritten or not) is below the watermark.
    released(c.secondary(svmSynAck, 0));
    assert.equal(c.expired(1_000_000), undefined);
  }
  // Guest-initiated: a SYN without ACK has no ack condition.
  const g = small();
  const pvmSyn = tcpFrame({ seq: ISN, flags: "S" });
  released(g.primary(pvmSyn, 0));
  assert.deepEqual(released(g.secondary(tcpFrame({ seq: svmIsn, flags: "S" }), 0)), [pvmSyn]);
  // The units of the SVM's SYN segment sit at the PVM's ISN: a FIN on it lands at seq+1.
  const h = small();
  assert.deepEqual(released(h.primary(pvmSynAck, 0)), []);
  assert.deepEqual(released(h.secondary(tcpFrame({ seq: svmIsn, ack: clientIsn + 1, flags: "SFA" }), 0)), [pvmSynAck]);
  const r = h.primary(pvm(0, 10, { ack: clientIsn + 1 }), 0);
  assert.equal(r.divergence?.reason, "length");
  assert.match(r.divergence?.detail ?? "", / at seq\+1: PVM 0x[0-9a-f]{2}, SVM FIN$/);
});

test("comparator: a new connection on the same addresses starts a fresh stream", () => {
  const c = small({ compareTimeoutMs: 100 });
  const synAck1 = tcpFrame({ seq: ISN, ack: 778, flags: "SA" });
  released(c.primary(synAck1, 0));
  assert.deepEqual(released(c.secondary(tcpFrame({ seq: 0x5000, ack: 778, flags: "SA" }), 0)), [synAck1]);
  const fin = pvm(0, 10, { flags: "FPA", ack: 778 });
  released(c.primary(fin, 0));
  assert.deepEqual(released(c.secondary(svm(0, 10, { flags: "FPA", ack: 778 }), 0)), [fin]);
  // Reuse: the SVM's new SYN-ACK comes first and waits for the PVM's.
  const isn2 = 0x7000000;
  assert.deepEqual(released(c.secondary(tcpFrame({ seq: 0x9000, ack: 9001, flags: "SA" }), 1)), []);
  const synAck2 = tcpFrame({ seq: isn2, ack: 9001, flags: "SA" });
  assert.deepEqual(released(c.primary(synAck2, 1)), [synAck2]);
  const d = pvm(0, 100, { isn: isn2, ack: 9001 });
  released(c.primary(d, 1));
  assert.deepEqual(released(c.secondary(svm(0, 100, { isn: isn2, ack: 9001 }), 1)), [d]);
  assert.equal(c.expired(1000), undefined);

  // A stream seen from the middle (after a checkpoint), its last frame still held: a new SYN is not compared
  // against the old stream's positions; it waits for the checkpoint.
  const m = small({ compareTimeoutMs: 100 });
  const old = pvm(500, 600, { ack: 777 });
  released(m.primary(old, 0));
  const syn = tcpFrame({ seq: ISN - 1_000_000, ack: 1, flags: "SA" });
  released(m.secondary(tcpFrame({ seq: 42, ack: 1, flags: "SA" }), 0));
  assert.deepEqual(released(m.primary(syn, 0)), []);
  assert.deepEqual(released(m.secondary(svm(500, 600, { ack: 777 }), 0)), [old]);
  assert.match(m.expired(101)?.detail ?? "", /new connection \(ISN 0\) while the previous one's frames are held/);
  assert.deepEqual(m.checkpointed(), [syn]);
});

test("comparator: sequence numbers wrapping past 2^32", () => {
  const isn = 0xffffff00;
  const c = small();
  const a = pvm(0, 200, { isn }); // crosses the wrap at position 255
  const b = pvm(200, 400, { isn });
  released(c.primary(tcpFrame({ seq: isn, flags: "S" }), 0));
  released(c.secondary(tcpFrame({ seq: 12345, flags: "S" }), 0));
  released(c.primary(a, 0));
  released(c.primary(b, 0));
  assert.deepEqual(released(c.secondary(svm(0, 255, { isn }), 0)), [a]);
  assert.deepEqual(released(c.secondary(svm(255, 400, { isn }), 0)), [b]);
  // A mismatch past the wrap is reported relative to the ISN.
  const bad = c.secondary(svm(400, 500, { isn, salt: 3 }), 0);
  assert.equal(bad.divergence, undefined); // nothing of the PVM's to compare with yet
  const r = c.primary(pvm(400, 500, { isn }), 0);
  assert.equal(r.divergence?.reason, "payload");
  assert.match(r.divergence?.detail ?? "", / at seq\+40[1-9]:/);
  // With the ISN known, the offset from it, as the detail's seq+N.
  assert.equal(r.divergence?.flow, "tcp 10.77.0.10:6379>10.77.0.2:41000");
  assert.equal(r.divergence?.offset, Number(/seq\+(\d+):/.exec(r.divergence?.detail ?? "")?.[1]));
  assert.equal(r.divergence?.seq, undefined);
});

test("comparator: a PVM RST waits for an SVM RST", () => {
  const c = small();
  const rst = tcpFrame({ seq: ISN, flags: "R" });
  assert.deepEqual(released(c.primary(rst, 0)), []);
  assert.deepEqual(released(c.secondary(tcpFrame({ seq: ISN + 5, flags: "R" }), 0)), [rst]);
  const d = small({ compareTimeoutMs: 10 });
  released(d.primary(rst, 0));
  assert.match(d.expired(11)?.detail ?? "", /PVM sent RST, SVM did not/);
});

test("comparator: UDP in order by payload; length and payload differences", () => {
  const c = small();
  const u1 = udpFrame({ payload: "one", id: 1 });
  const u2 = udpFrame({ payload: "two", id: 2 });
  released(c.primary(u1, 0));
  released(c.primary(u2, 0));
  assert.deepEqual(released(c.secondary(udpFrame({ payload: "one", id: 77, ttl: 9 }), 0)), [u1]);
  assert.deepEqual(released(c.secondary(udpFrame({ payload: "two", id: 78 }), 0)), [u2]);
  released(c.secondary(udpFrame({ payload: "three" }), 0));
  const u3 = udpFrame({ payload: "three" });
  assert.deepEqual(released(c.primary(u3, 0)), [u3]);
  const l = small();
  released(l.primary(udpFrame({ payload: "abc" }), 0));
  const rl = l.secondary(udpFrame({ payload: "abcd" }), 0);
  assert.equal(rl.divergence?.reason, "length");
  assert.match(rl.divergence?.detail ?? "", /^udp 10\.77\.0\.10:5353>10\.77\.0\.2:53: PVM sent 3 octets, SVM 4/);
  const p = small();
  released(p.secondary(udpFrame({ payload: "abc" }), 0));
  const rp = p.primary(udpFrame({ payload: "abd" }), 0).divergence;
  assert.equal(rp?.reason, "payload");
  // A datagram's place is the first octet that differs.
  assert.deepEqual({ flow: rp?.flow, offset: rp?.offset }, { flow: "udp 10.77.0.10:5353>10.77.0.2:53", offset: 2 });
  assert.equal(rl.divergence?.flow, "udp 10.77.0.10:5353>10.77.0.2:53");
  // Flows are independent: another port's datagram is not matched against this one.
  const f = small();
  const x = udpFrame({ payload: "x", sport: 1 });
  released(f.primary(x, 0));
  released(f.secondary(udpFrame({ payload: "y", sport: 2 }), 0));
  assert.deepEqual(released(f.secondary(udpFrame({ payload: "x", sport: 1 }), 0)), [x]);
});

test("comparator: ICMP by message without checksum, flows per echo identifier; other IPv4 by payload", () => {
  const c = small();
  const e1 = icmpFrame({ identifier: 1, sequence: 1, data: "ping" });
  const e2 = icmpFrame({ identifier: 2, sequence: 1, data: "ping" });
  released(c.primary(e1, 0));
  released(c.primary(e2, 0));
  assert.deepEqual(released(c.secondary(icmpFrame({ identifier: 2, sequence: 1, data: "ping", id: 5 }), 0)), [e2]);
  assert.deepEqual(released(c.secondary(icmpFrame({ identifier: 1, sequence: 1, data: "ping", ttl: 1 }), 0)), [e1]);
  released(c.primary(icmpFrame({ identifier: 1, sequence: 2, data: "ping" }), 0));
  assert.equal(c.secondary(icmpFrame({ identifier: 1, sequence: 3, data: "ping" }), 0).divergence?.reason, "payload");

  const g = small();
  const gre = ipv4Frame({ id: 1, ttl: 64 }, 47, pattern(30));
  released(g.primary(gre, 0));
  assert.deepEqual(released(g.secondary(ipv4Frame({ id: 999, ttl: 3 }, 47, pattern(30)), 0)), [gre]);
  released(g.primary(ipv4Frame({}, 47, pattern(30)), 0));
  assert.equal(g.secondary(ipv4Frame({}, 47, pattern(31)), 0).divergence?.reason, "length");
});

test("comparator: ARP, IPv6 and unparsable frames pass uncompared; SVM ones are ignored", () => {
  const c = small();
  const arp = arpFrame();
  const v6 = ipv6Frame();
  const junk = Uint8Array.from([1, 2, 3]);
  assert.deepEqual(c.primary(arp, 0), { release: [arp] });
  assert.deepEqual(c.primary(v6, 0), { release: [v6] });
  assert.deepEqual(c.primary(junk, 0), { release: [junk] });
  assert.deepEqual(c.secondary(arpFrame(), 0), { release: [] });
  assert.deepEqual(c.secondary(ipv6Frame(), 0), { release: [] });
  const s = c.stats();
  assert.equal(s.releasedUncompared, 3);
  assert.equal(s.ignoredSecondary, 2);
  assert.equal(s.flows, 0);
  assert.equal(c.expired(1_000_000), undefined);
});

test("comparator: checkpointed() releases held frames of all flows in arrival order and forgets all state", () => {
  const c = small();
  const order = [pvm(0, 10), udpFrame({ payload: "u" }), pvm(0, 10, { sport: 1 }), pvm(10, 20), icmpFrame({})];
  for (const f of order) released(c.primary(f, 0));
  released(c.secondary(svm(50, 60), 0));
  released(c.secondary(udpFrame({ payload: "other", sport: 9 }), 0));
  assert.equal(c.stats().heldFrames, 5);
  assert.deepEqual(c.checkpointed(), order);
  const s = c.stats();
  assert.deepEqual([s.heldFrames, s.heldBytes, s.secondaryQueuedBytes, s.flows], [0, 0, 0, 0]);
  assert.equal(s.releasedAtCheckpoint, 5);
  // Fresh state: the stream restarts wherever the PVM is.
  const n = pvm(500, 600);
  released(c.primary(n, 0));
  assert.deepEqual(released(c.secondary(svm(500, 600), 0)), [n]);
  // releaseAll (failover) is the same, counted apart.
  const h = pvm(600, 700);
  released(c.primary(h, 0));
  assert.deepEqual(c.releaseAll(), [h]);
  assert.equal(c.stats().releasedAtFailover, 1);
  assert.equal(c.stats().releasedAtCheckpoint, 5);
});

test("comparator: after a checkpoint, the SVM's data below the PVM's first segment is discarded", () => {
  const c = small({ compareTimeoutMs: 100 });
  // The SVM retransmits pre-checkpoint data the PVM does not: not a divergence.
  released(c.secondary(svm(0, 100), 0));
  released(c.secondary(svm(100, 200), 0));
  const p = pvm(100, 200);
  assert.deepEqual(released(c.primary(p, 0)), [p]);
  assert.equal(c.stats().secondaryQueuedBytes, 0);
  assert.equal(c.expired(1000), undefined);
});

test("comparator: defaults", () => {
  assert.equal(DEFAULT_COMPARE_TIMEOUT_MS, 3000);
  const c = new Comparator();
  const f = pvm(0, 1);
  released(c.primary(f, 0));
  assert.equal(c.expired(3000), undefined);
  assert.equal(c.expired(3001)?.reason, "timeout");
});

/** Deterministic PRNG (mulberry32) so a failure is reproducible from its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

function randomCuts(random: () => number, length: number, maxSegment: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let at = 0; at < length; ) {
    const n = Math.min(length - at, 1 + Math.floor(random() * maxSegment));
    out.push([at, at + n]);
    at += n;
  }
  return out;
}

test("comparator: random segmentations, interleavings, SVM reordering and duplicates, across 2^32", () => {
  for (let seed = 1; seed <= 200; seed++) {
    const random = prng(seed);
    const isn = seed % 2 === 0 ? (0x100000000 - Math.floor(random() * 5000)) >>> 0 : Math.floor(random() * 2 ** 32);
    const length = 1 + Math.floor(random() * 6000);
    const withFin = random() < 0.5;
    const segments = (cuts: Array<[number, number]>, side: "pvm" | "svm"): Uint8Array[] =>
      cuts.map(([from, to], i) => {
        const fin = withFin && i === cuts.length - 1 ? "F" : "";
        return (side === "pvm" ? pvm : svm)(from, to, { isn, flags: `${fin}PA` });
      });
    const pvmFrames = segments(randomCuts(random, length, 1500), "pvm");
    const svmFrames = segments(randomCuts(random, length, 1500), "svm");
    // The SVM's frames arrive locally shuffled, some twice.
    for (let i = 0; i < svmFrames.length - 1; i++) {
      if (random() < 0.3) [svmFrames[i], svmFrames[i + 1]] = [svmFrames[i + 1] as Uint8Array, svmFrames[i] as Uint8Array];
    }
    const svmQueue = svmFrames.flatMap((f) => (random() < 0.1 ? [f, f] : [f]));
    const c = small({ maxHeldFrames: 10_000, maxHeldBytes: 1 << 24 });
    const out: Uint8Array[] = [];
    let p = 0;
    let s = 0;
    while (p < pvmFrames.length || s < svmQueue.length) {
      const takePvm = s >= svmQueue.length || (p < pvmFrames.length && random() < 0.5);
      const r = takePvm ? c.primary(pvmFrames[p++] as Uint8Array, 0) : c.secondary(svmQueue[s++] as Uint8Array, 0);
      assert.equal(r.divergence, undefined, `seed ${seed}: ${r.divergence?.detail}`);
      out.push(...r.release);
    }
    assert.deepEqual(out, pvmFrames, `seed ${seed}: every PVM frame released, in order`);
    const st = c.stats();
    assert.equal(st.secondaryQueuedBytes, 0, `seed ${seed}`);
    assert.equal(st.heldFrames, 0, `seed ${seed}`);
    assert.equal(c.expired(1_000_000), undefined, `seed ${seed}`);

    // The same with one SVM octet changed: always a payload divergence, never a release past it.
    const bad = small({ maxHeldFrames: 10_000, maxHeldBytes: 1 << 24 });
    const corrupt = Math.floor(random() * length);
    const badSvm = randomCuts(random, length, 1500).map(([from, to], i, all) => {
      const payload = pattern(to - from, from);
      if (corrupt >= from && corrupt < to) payload[corrupt - from] ^= 0x40;
      const fin = withFin && i === all.length - 1 ? "F" : "";
      return tcpFrame({ seq: seqAdd(isn, 1 + from), ack: PEER_ACK, flags: `${fin}PA`, payload });
    });
    let divergence: string | undefined;
    const badOut: Uint8Array[] = [];
    // Interleaved at random, each side in its own order (a guest's NIC never reorders its output).
    for (let i = 0, j = 0; i < pvmFrames.length || j < badSvm.length; ) {
      const takePvm = j >= badSvm.length || (i < pvmFrames.length && random() < 0.5);
      const r = takePvm ? bad.primary(pvmFrames[i++] as Uint8Array, 0) : bad.secondary(badSvm[j++] as Uint8Array, 0);
      badOut.push(...r.release);
      if (r.divergence) divergence = `${r.divergence.reason} ${r.divergence.detail}`;
    }
    assert.match(divergence ?? "none", /^payload /, `seed ${seed}`);
    assert.ok(badOut.every((f) => { const q = parseFrame(f); return q.kind === "tcp" && ((q.tcp.seq - isn - 1) >>> 0) + q.tcp.payload.length <= corrupt; }), `seed ${seed}: released past the corrupt octet`);
  }
});
