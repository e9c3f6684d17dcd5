/**
 * The survivor's translations carried through a second failover
 * (TranslationChain, TcpRewriter.snapshot/restored): a connection opened in
 * the first pair's last epoch keeps the numbers its client knows after the
 * second takeover, and one opened in the second pair's last epoch too.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { linkLayersOf, TranslationChain } from "./link-translation.js";
import { TcpRewriter } from "./tcp-rewriter.js";
import { checkChecksums, parseFrame, seqAdd } from "./packet.js";
import { type TcpSpec, tcpFrame, toGuest } from "./testing.js";

const PVM1_ISN = 1_000_000;
const S1_ISN = 0x9abcdef0;
const PEER_ISN = 5_000;
const PVM1_TS = 400_000;
const S1_TS = 7_000;
const PEER_TS = 123_456;

const fromGuest = (spec: TcpSpec): Uint8Array => tcpFrame(spec);
const fromPeer = (spec: TcpSpec): Uint8Array => tcpFrame(toGuest(spec));

function seqOf(frame: Uint8Array): { seq: number; ack: number; tsval: number | undefined; tsecr: number | undefined } {
  const p = parseFrame(frame);
  assert.equal(p.kind, "tcp");
  if (p.kind !== "tcp") throw new Error("not tcp");
  assert.deepEqual(checkChecksums(frame), { ipv4: true, transport: true });
  return { seq: p.tcp.seq, ack: p.tcp.ack, tsval: p.tcp.timestamps?.tsval, tsecr: p.tcp.timestamps?.tsecr };
}

/** The first pair's secondary S1 learns a guest-accepted connection opened after the last checkpoint (PVM1 ISN vs its own). */
function firstSecondary(): TcpRewriter {
  const r = new TcpRewriter();
  r.toSecondaryVm(fromPeer({ seq: PEER_ISN, flags: "S", ts: { val: PEER_TS, ecr: 0 } }));
  r.fromSecondaryVm(fromGuest({ seq: S1_ISN, ack: PEER_ISN + 1, flags: "SA", ts: { val: S1_TS, ecr: PEER_TS } }));
  r.toSecondaryVm(fromPeer({ seq: PEER_ISN + 1, ack: PVM1_ISN + 1, flags: "A", ts: { val: PEER_TS + 1, ecr: PVM1_TS } }));
  return r;
}

test("rewriter: a restored snapshot rewrites as the original does, both ways", () => {
  const original = firstSecondary();
  const copy = TcpRewriter.restored(original.snapshot());
  assert.equal(copy.stats().connections, 1);
  const out = fromGuest({ seq: S1_ISN + 1, ack: PEER_ISN + 10, flags: "PA", payload: "+OK\r\n", ts: { val: S1_TS + 20, ecr: PEER_TS + 5 } });
  const back = fromPeer({ seq: PEER_ISN + 10, ack: PVM1_ISN + 6, flags: "A", ts: { val: PEER_TS + 9, ecr: PVM1_TS + 20 } });
  assert.deepEqual(copy.fromSecondaryVm(out), original.fromSecondaryVm(out));
  assert.deepEqual(copy.toSecondaryVm(back), original.toSecondaryVm(back));
  assert.deepEqual(seqOf(copy.fromSecondaryVm(out)), { seq: PVM1_ISN + 1, ack: PEER_ISN + 10, tsval: PVM1_TS + 20, tsecr: PEER_TS + 5 });
  // Close tracking goes on in the copy: the entry goes after an RST.
  copy.toSecondaryVm(fromPeer({ seq: PEER_ISN + 10, ack: PVM1_ISN + 6, flags: "RA" }));
  assert.equal(copy.stats().connections, 0);
  assert.equal(original.stats().connections, 1, "the snapshot is a copy, not the original's table");
});

test("chain: after a second failover, connections of both last epochs keep the numbers their clients know", () => {
  // First failover: S1 survives and rewrites at its link, for good (T1).
  const t1 = firstSecondary();
  // S1 protected again; a connection opened in the new pair's last epoch: S1's guest (ISN A) under T1, which passes
  // it with offset 0 (the client talks to S1 directly now).
  const A = 0x1111_0000;
  const B = 0x2222_0000; // the new secondary S2's guest, same connection
  const conn2 = { sport: 80, dport: 50000 }; // the guest's frames; the peer's swap the ports
  const conn2In = { sport: 50000, dport: 80 };
  // The snapshot goes to S2 when protection starts (LINK_TRANSLATION), before conn2 exists.
  const carried = TranslationChain.restoreLayers([t1.snapshot()]);
  assert.deepEqual(seqOf(t1.fromSecondaryVm(fromGuest({ ...conn2, seq: A, ack: 9001, flags: "SA" }))).seq, A);
  t1.toSecondaryVm(fromPeer({ ...conn2In, seq: 9001, ack: A + 1, flags: "A" }));
  // S2 (secondary of the second pair) learns conn2 from the mirrored input, which is in S1's guest space (beneath T1).
  const t2 = new TcpRewriter();
  t2.fromSecondaryVm(fromGuest({ ...conn2, seq: B, ack: 9001, flags: "SA" }));
  t2.toSecondaryVm(fromPeer({ ...conn2In, seq: 9001, ack: A + 1, flags: "A" }));

  // Second failover: S2 takes over with its rewriter beneath the carried layers.
  const link = TranslationChain.of(carried, t2);
  assert.equal(link.depth, 2);
  // conn1 (first pair's last epoch): S2's guest holds S1's state (ISN S1_ISN); its client knows PVM1's numbers.
  const out1 = fromGuest({ seq: S1_ISN + 1, ack: PEER_ISN + 10, flags: "PA", payload: "+OK\r\n", ts: { val: S1_TS + 20, ecr: PEER_TS + 5 } });
  assert.deepEqual(seqOf(link.toLan(out1)), { seq: PVM1_ISN + 1, ack: PEER_ISN + 10, tsval: PVM1_TS + 20, tsecr: PEER_TS + 5 });
  const in1 = fromPeer({ seq: PEER_ISN + 10, ack: PVM1_ISN + 6, flags: "A", ts: { val: PEER_TS + 9, ecr: PVM1_TS + 20 } });
  assert.deepEqual(seqOf(link.toGuest(in1)), { seq: PEER_ISN + 10, ack: S1_ISN + 6, tsval: PEER_TS + 9, tsecr: S1_TS + 20 });
  // Without the carried layer (S2's own rewriter only), conn1 would leave with S1's numbers: the client would reset it.
  assert.equal(seqOf(t2.fromSecondaryVm(out1)).seq, S1_ISN + 1);
  // conn2 (second pair's last epoch): S2's ISN B becomes A, as its client knows it.
  assert.equal(seqOf(link.toLan(fromGuest({ ...conn2, seq: B + 1, ack: 9001, flags: "PA", payload: "x" }))).seq, seqAdd(A, 1));
  assert.equal(seqOf(link.toGuest(fromPeer({ ...conn2In, seq: 9001, ack: A + 2, flags: "A" }))).ack, seqAdd(B, 2));
  // The chain's snapshot carries both layers to a third secondary.
  const again = TranslationChain.of(TranslationChain.restoreLayers(link.snapshot()), new TcpRewriter());
  assert.equal(again.depth, 3);
  assert.deepEqual(seqOf(again.toLan(out1)).seq, PVM1_ISN + 1);
  assert.equal(again.connections(), link.connections());
});

test("chain: a carried entry of a closed connection does not touch a new connection on the same ports", () => {
  const t1 = firstSecondary();
  const link = TranslationChain.of(TranslationChain.restoreLayers([t1.snapshot()]), new TcpRewriter());
  // The same 4-tuple opened again by the guest (new ISN from a new SYN-ACK): the carried entry is replaced, offset 0.
  const NEW_ISN = 0x3333_0000;
  link.toGuest(fromPeer({ seq: 77, flags: "S" }));
  assert.equal(seqOf(link.toLan(fromGuest({ seq: NEW_ISN, ack: 78, flags: "SA" }))).seq, NEW_ISN);
  link.toGuest(fromPeer({ seq: 78, ack: NEW_ISN + 1, flags: "A" }));
  assert.equal(seqOf(link.toLan(fromGuest({ seq: NEW_ISN + 1, ack: 78, flags: "PA", payload: "y" }))).seq, NEW_ISN + 1);
});

test("chain: a migration's destination restores the whole chain; linkLayersOf reads only chains", () => {
  const t1 = firstSecondary();
  const moved = TranslationChain.restore([t1.snapshot()]);
  assert.equal(moved.depth, 1);
  const out = fromGuest({ seq: S1_ISN + 1, ack: PEER_ISN + 10, flags: "PA", payload: "+OK\r\n" });
  assert.equal(seqOf(moved.toLan(out)).seq, PVM1_ISN + 1);
  assert.throws(() => TranslationChain.restore([]), /at least one layer/);
  assert.deepEqual(linkLayersOf(moved), [t1.snapshot()]);
  assert.equal(linkLayersOf(undefined), undefined);
  assert.equal(linkLayersOf({ toGuest: (f: Uint8Array) => f, toLan: (f: Uint8Array) => f }), undefined);
});

test("rewriter: a snapshot leaves out what changes nothing (offset 0) and what is not learned yet; version moves with changes only", () => {
  const r = firstSecondary(); // one learned, non-zero offset
  const v0 = r.version;
  // Offset 0: a connection opened with this side's own numbers (the peer acks its own ISN).
  r.fromSecondaryVm(fromGuest({ sport: 7000, seq: 100, ack: 9, flags: "SA" }));
  r.toSecondaryVm(fromPeer({ dport: 7000, seq: 9, ack: 101, flags: "A" }));
  // Not learned: a SYN-ACK whose handshake ACK has not come.
  r.fromSecondaryVm(fromGuest({ sport: 7001, seq: 200, ack: 9, flags: "SA" }));
  assert.equal(r.stats().connections, 3);
  assert.deepEqual(r.snapshot().map((e) => e.guestPort), [6379]);
  assert.ok(r.version > v0);
  const v1 = r.version;
  r.fromSecondaryVm(fromGuest({ seq: S1_ISN + 1, ack: PEER_ISN + 1, flags: "PA", payload: "x" })); // a lookup and a rewrite
  assert.equal(r.version, v1, "rewriting a frame is no change of the table");
  r.toSecondaryVm(fromPeer({ seq: PEER_ISN + 1, ack: PVM1_ISN + 2, flags: "RA" }));
  assert.ok(r.version > v1, "a connection gone is a change");
  assert.deepEqual(r.snapshot(), []);
  // A chain drops layers left empty, and keeps the 16 innermost.
  const empty = new TcpRewriter();
  const chain = TranslationChain.of([firstSecondary(), empty], new TcpRewriter());
  assert.equal(chain.snapshot().length, 1);
  const deep = TranslationChain.of(Array.from({ length: 17 }, () => firstSecondary()), new TcpRewriter());
  assert.equal(deep.snapshot().length, 16);
});
