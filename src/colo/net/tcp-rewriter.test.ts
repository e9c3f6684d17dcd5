import { test } from "node:test";
import assert from "node:assert/strict";
import { TcpRewriter } from "./tcp-rewriter.js";
import { checkChecksums, parseFrame, seqAdd } from "./packet.js";
import { type TcpSpec, arpFrame, pattern, tcpFrame, toGuest, udpFrame } from "./testing.js";

const PVM_ISN = 1_000_000;
const SVM_ISN = 0x9abcdef0;
const PEER_ISN = 5_000;
const PVM_TS = 400_000;
const SVM_TS = 7_000;
const PEER_TS = 123_456;

/** A frame from the guest (as the SVM sends it). */
const out = (spec: TcpSpec): Uint8Array => tcpFrame(spec);
/** A frame from the peer to the guest (as mirrored to the SVM). */
const inbound = (spec: TcpSpec): Uint8Array => tcpFrame(toGuest(spec));

/** Rewriting must give exactly the frame built with the expected fields: this checks the checksums too. */
function assertFrame(actual: Uint8Array, expected: Uint8Array): void {
  assert.deepEqual(checkChecksums(actual), { ipv4: true, transport: true });
  assert.deepEqual(actual, expected);
}

/** Guest-accepted handshake on a fresh rewriter; returns it with the offsets learned. */
function acceptedConnection(r = new TcpRewriter(), svmIsn = SVM_ISN, pvmIsn = PVM_ISN): TcpRewriter {
  const syn = inbound({ seq: PEER_ISN, flags: "S", ts: { val: PEER_TS, ecr: 0 } });
  assert.equal(r.toSecondaryVm(syn), syn); // no entry: unchanged, same buffer
  const synAck = out({ seq: svmIsn, ack: PEER_ISN + 1, flags: "SA", ts: { val: SVM_TS, ecr: PEER_TS } });
  assert.equal(r.fromSecondaryVm(synAck), synAck); // the SVM's SYN-ACK goes out unrewritten
  const ack = inbound({ seq: PEER_ISN + 1, ack: seqAdd(pvmIsn, 1), flags: "A", ts: { val: PEER_TS + 1, ecr: PVM_TS } });
  assertFrame(r.toSecondaryVm(ack), inbound({ seq: PEER_ISN + 1, ack: seqAdd(svmIsn, 1), flags: "A", ts: { val: PEER_TS + 1, ecr: SVM_TS } }));
  return r;
}

test("rewriter: guest-accepted connection: learns offsets from the third handshake ACK", () => {
  const r = acceptedConnection();
  assert.deepEqual(r.stats(), { connections: 1, rewrittenOut: 0, rewrittenIn: 1, learned: 1, evicted: 0 });
  // SVM output: seq and TSval into the PVM's space; ack and TSecr (peer's space) untouched.
  const response = out({ seq: SVM_ISN + 1, ack: PEER_ISN + 10, flags: "PA", payload: "+OK\r\n", ts: { val: SVM_TS + 20, ecr: PEER_TS + 5 } });
  assertFrame(
    r.fromSecondaryVm(response),
    out({ seq: PVM_ISN + 1, ack: PEER_ISN + 10, flags: "PA", payload: "+OK\r\n", ts: { val: PVM_TS + 20, ecr: PEER_TS + 5 } }),
  );
  // Mirrored input: ack, SACK edges and TSecr into the SVM's space; seq and TSval untouched.
  const sacked = inbound({
    seq: PEER_ISN + 10,
    ack: PVM_ISN + 6,
    flags: "A",
    ts: { val: PEER_TS + 9, ecr: PVM_TS + 20 },
    sack: [
      [PVM_ISN + 100, PVM_ISN + 200],
      [PVM_ISN + 300, PVM_ISN + 400],
    ],
  });
  assertFrame(
    r.toSecondaryVm(sacked),
    inbound({
      seq: PEER_ISN + 10,
      ack: SVM_ISN + 6,
      flags: "A",
      ts: { val: PEER_TS + 9, ecr: SVM_TS + 20 },
      sack: [
        [SVM_ISN + 100, SVM_ISN + 200],
        [SVM_ISN + 300, SVM_ISN + 400],
      ],
    }),
  );
  assert.deepEqual(r.stats(), { connections: 1, rewrittenOut: 1, rewrittenIn: 2, learned: 1, evicted: 0 });
});

test("rewriter: guest-initiated connection: learns from the peer's SYN-ACK", () => {
  const r = new TcpRewriter();
  const spec = { sport: 50000, dport: 80 };
  const syn = out({ ...spec, seq: SVM_ISN, flags: "S", ts: { val: SVM_TS, ecr: 0 } });
  assert.equal(r.fromSecondaryVm(syn), syn);
  const synAck = inbound({ sport: 80, dport: 50000, seq: PEER_ISN, ack: PVM_ISN + 1, flags: "SA", ts: { val: PEER_TS, ecr: PVM_TS } });
  assertFrame(r.toSecondaryVm(synAck), inbound({ sport: 80, dport: 50000, seq: PEER_ISN, ack: SVM_ISN + 1, flags: "SA", ts: { val: PEER_TS, ecr: SVM_TS } }));
  const ack = out({ ...spec, seq: SVM_ISN + 1, ack: PEER_ISN + 1, flags: "A", ts: { val: SVM_TS + 1, ecr: PEER_TS } });
  assertFrame(r.fromSecondaryVm(ack), out({ ...spec, seq: PVM_ISN + 1, ack: PEER_ISN + 1, flags: "A", ts: { val: PVM_TS + 1, ecr: PEER_TS } }));
  assert.equal(r.stats().learned, 1);
  // A retransmitted SVM SYN after learning is rewritten too.
  assertFrame(r.fromSecondaryVm(syn), out({ ...spec, seq: PVM_ISN, flags: "S", ts: { val: PVM_TS, ecr: 0 } }));
});

test("rewriter: arithmetic wraps mod 2^32 (seq, ack, SACK, timestamps)", () => {
  const svmIsn = 0xfffffff0;
  const pvmIsn = 0x00000010; // offset 0x20, crossing the wrap
  const r = new TcpRewriter();
  r.fromSecondaryVm(out({ seq: svmIsn, ack: 1, flags: "SA", ts: { val: 0xfffffffe, ecr: 1 } }));
  r.toSecondaryVm(inbound({ seq: 1, ack: pvmIsn + 1, flags: "A", ts: { val: 2, ecr: 0x00000005 } })); // tsOffset 7
  const data = out({ seq: svmIsn + 1, ack: 1, flags: "PA", payload: pattern(100), ts: { val: 0xffffffff, ecr: 2 } });
  assertFrame(r.fromSecondaryVm(data), out({ seq: pvmIsn + 1, ack: 1, flags: "PA", payload: pattern(100), ts: { val: 6, ecr: 2 } }));
  const past = out({ seq: seqAdd(svmIsn, 0x30), ack: 1, flags: "A", ts: { val: 3, ecr: 2 } });
  assertFrame(r.fromSecondaryVm(past), out({ seq: seqAdd(pvmIsn, 0x30), ack: 1, flags: "A", ts: { val: 10, ecr: 2 } }));
  const sack = inbound({ seq: 1, ack: pvmIsn + 1, flags: "A", ts: { val: 3, ecr: 6 }, sack: [[pvmIsn + 40, pvmIsn + 80]] });
  assertFrame(
    r.toSecondaryVm(sack),
    inbound({ seq: 1, ack: seqAdd(svmIsn, 1), flags: "A", ts: { val: 3, ecr: 0xffffffff }, sack: [[seqAdd(svmIsn, 40), seqAdd(svmIsn, 80)]] }),
  );
});

test("rewriter: without timestamps on both sides only sequence numbers change", () => {
  const r = new TcpRewriter();
  r.fromSecondaryVm(out({ seq: SVM_ISN, ack: PEER_ISN + 1, flags: "SA" }));
  r.toSecondaryVm(inbound({ seq: PEER_ISN + 1, ack: PVM_ISN + 1, flags: "A", ts: { val: 1, ecr: 2 } }));
  const d = out({ seq: SVM_ISN + 1, ack: PEER_ISN + 1, flags: "PA", payload: "x", ts: { val: 50, ecr: 1 } });
  assertFrame(r.fromSecondaryVm(d), out({ seq: PVM_ISN + 1, ack: PEER_ISN + 1, flags: "PA", payload: "x", ts: { val: 50, ecr: 1 } }));
});

test("rewriter: unknown connections and non-TCP frames pass unchanged; inputs are never modified", () => {
  const r = new TcpRewriter();
  const stranger = out({ seq: 42, ack: 43, flags: "PA", payload: "old connection" });
  assert.equal(r.fromSecondaryVm(stranger), stranger);
  const strangerIn = inbound({ seq: 43, ack: 42, flags: "A" });
  assert.equal(r.toSecondaryVm(strangerIn), strangerIn);
  const u = udpFrame({ payload: "dns" });
  assert.equal(r.fromSecondaryVm(u), u);
  assert.equal(r.toSecondaryVm(u), u);
  const a = arpFrame();
  assert.equal(r.fromSecondaryVm(a), a);
  const junk = Uint8Array.from([1, 2, 3]);
  assert.equal(r.toSecondaryVm(junk), junk);

  acceptedConnection(r);
  const data = out({ seq: SVM_ISN + 1, ack: PEER_ISN + 1, flags: "PA", payload: pattern(64), ts: { val: SVM_TS, ecr: PEER_TS } });
  const before = data.slice();
  const rewritten = r.fromSecondaryVm(data);
  assert.notEqual(rewritten, data);
  assert.deepEqual(data, before);
  const mirrored = inbound({ seq: PEER_ISN + 1, ack: PVM_ISN + 65, flags: "A", sack: [[PVM_ISN + 1, PVM_ISN + 2]], ts: { val: 1, ecr: PVM_TS } });
  const mirroredBefore = mirrored.slice();
  r.toSecondaryVm(mirrored);
  assert.deepEqual(mirrored, mirroredBefore);
  // A subarray of a bigger buffer: the rest of the buffer is untouched too.
  const big = new Uint8Array(data.length + 20).fill(0xaa);
  big.set(data, 10);
  const view = big.subarray(10, 10 + data.length);
  assertFrame(r.fromSecondaryVm(view), rewritten);
  assert.deepEqual(big.subarray(10, 10 + data.length), before);
  assert.ok(big.subarray(0, 10).every((b) => b === 0xaa));
});

test("rewriter: reset() forgets every connection (a checkpoint aligned the SVM with the PVM)", () => {
  const r = acceptedConnection();
  r.reset();
  assert.equal(r.stats().connections, 0);
  const d = out({ seq: PVM_ISN + 1, ack: PEER_ISN + 1, flags: "PA", payload: "y" });
  assert.equal(r.fromSecondaryVm(d), d);
  const i = inbound({ seq: PEER_ISN + 1, ack: PVM_ISN + 2, flags: "A" });
  assert.equal(r.toSecondaryVm(i), i);
  assert.equal(r.stats().learned, 1);
});

test("rewriter: the table is bounded; the least recently used connection is evicted", () => {
  const r = new TcpRewriter({ maxConnections: 2 });
  for (const port of [1, 2]) {
    r.fromSecondaryVm(out({ sport: port, seq: SVM_ISN, ack: 1, flags: "SA" }));
    r.toSecondaryVm(inbound({ dport: port, seq: 1, ack: PVM_ISN + 1, flags: "A" }));
  }
  // Use port 1 again so port 2 is the least recently used.
  r.fromSecondaryVm(out({ sport: 1, seq: SVM_ISN + 1, ack: 1, flags: "A" }));
  r.fromSecondaryVm(out({ sport: 3, seq: SVM_ISN, ack: 1, flags: "SA" }));
  assert.deepEqual(r.stats(), { connections: 2, rewrittenOut: 1, rewrittenIn: 2, learned: 2, evicted: 1 });
  const two = out({ sport: 2, seq: SVM_ISN + 1, ack: 1, flags: "A" });
  assert.equal(r.fromSecondaryVm(two), two);
  const one = r.fromSecondaryVm(out({ sport: 1, seq: SVM_ISN + 1, ack: 1, flags: "A" }));
  const p = parseFrame(one);
  assert.ok(p.kind === "tcp");
  assert.equal(p.tcp.seq, PVM_ISN + 1);
});

test("rewriter: entries go after an RST, or after both FINs are acknowledged", () => {
  const r = acceptedConnection();
  // Guest closes first: FIN at SVM_ISN + 11 (after 10 octets).
  r.fromSecondaryVm(out({ seq: SVM_ISN + 11, ack: PEER_ISN + 1, flags: "FA" }));
  // Peer acknowledges the guest's FIN (in the PVM's space) and sends its own.
  const finAck = r.toSecondaryVm(inbound({ seq: PEER_ISN + 1, ack: PVM_ISN + 12, flags: "FA" }));
  const fp = parseFrame(finAck);
  assert.ok(fp.kind === "tcp");
  assert.equal(fp.tcp.ack, SVM_ISN + 12);
  assert.equal(r.stats().connections, 1);
  // The guest's last ACK is still rewritten, then the entry goes.
  const last = r.fromSecondaryVm(out({ seq: SVM_ISN + 12, ack: PEER_ISN + 2, flags: "A" }));
  const lp = parseFrame(last);
  assert.ok(lp.kind === "tcp");
  assert.equal(lp.tcp.seq, PVM_ISN + 12);
  assert.equal(r.stats().connections, 0);

  const x = acceptedConnection();
  x.toSecondaryVm(inbound({ seq: PEER_ISN + 1, ack: PVM_ISN + 1, flags: "RA" }));
  assert.equal(x.stats().connections, 0);
  const y = acceptedConnection();
  const rst = y.fromSecondaryVm(out({ seq: SVM_ISN + 1, flags: "R" }));
  const rp = parseFrame(rst);
  assert.ok(rp.kind === "tcp");
  assert.equal(rp.tcp.seq, PVM_ISN + 1);
  assert.equal(y.stats().connections, 0);
});

test("rewriter: a new SVM SYN on the same addresses replaces the old entry; a peer SYN retransmission keeps it", () => {
  const r = new TcpRewriter();
  r.fromSecondaryVm(out({ seq: SVM_ISN, ack: PEER_ISN + 1, flags: "SA" }));
  // The peer retransmits its SYN (the PVM's SYN-ACK is still held by the comparator).
  const again = inbound({ seq: PEER_ISN, flags: "S" });
  assert.equal(r.toSecondaryVm(again), again);
  r.toSecondaryVm(inbound({ seq: PEER_ISN + 1, ack: PVM_ISN + 1, flags: "A" }));
  assert.equal(r.stats().learned, 1);
  r.fromSecondaryVm(out({ seq: 77, ack: 9001, flags: "SA" }));
  const ack = r.toSecondaryVm(inbound({ seq: 9001, ack: 500, flags: "A" }));
  const p = parseFrame(ack);
  assert.ok(p.kind === "tcp");
  assert.equal(p.tcp.ack, 78); // offset 500 - 78 learned afresh
  assert.equal(r.stats().learned, 2);
  assert.equal(r.stats().connections, 1);
});
