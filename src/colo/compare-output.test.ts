import { test } from "node:test";
import assert from "node:assert/strict";
import { CompareOutput } from "./compare-output.js";
import { DEFAULT_COMPARATOR_OPTIONS, type Divergence } from "./net/comparator.js";
import { seqAdd } from "./net/packet.js";
import { pattern, tcpFrame } from "./net/testing.js";

const ISN = 3_000_000;

/** Stream octets [from, to) of the guest's reply (the SVM's already rewritten: the same headers). */
function segment(from: number, to: number, salt = 0): Uint8Array {
  return tcpFrame({ seq: seqAdd(ISN, 1 + from), ack: 9000, flags: "PA", payload: pattern(to - from, from, salt), sport: 6379, id: 100 + from, window: 1000 });
}

function output(now: { t: number }) {
  const sent: Uint8Array[] = [];
  const diverged: Divergence[] = [];
  const out = new CompareOutput({ ...DEFAULT_COMPARATOR_OPTIONS, compareTimeoutMs: 100 }, (f) => sent.push(f), (d) => diverged.push(d), () => now.t);
  return { out, sent, diverged };
}

test("compare output: after seal() the PVM's frames belong to the next epoch: a checkpoint's release does not take them, the comparison after it does", () => {
  const now = { t: 1000 };
  const { out, sent } = output(now);
  const held = segment(0, 10);
  out.output(held); // the SVM never sends it: held until the checkpoint
  assert.equal(sent.length, 0);

  out.seal(); // the pause; the PVM resumes before SVM_READY and sends on
  const next1 = segment(10, 20);
  const next2 = segment(20, 30);
  out.output(next1);
  out.output(next2);
  // The SVM's frames that arrive meanwhile are its old epoch's (none here); the next epoch's cannot match yet.
  assert.equal(sent.length, 0, "nothing of the next epoch leaves before SVM_READY");
  assert.equal(out.stats().nextEpochFrames, 2);

  const committed = out.committed();
  assert.deepEqual(committed, [held], "SVM_READY: only the checkpoint's frame is released");
  assert.equal(out.stats().heldFrames, 2, "the next epoch's frames are now compared");
  assert.equal(out.stats().nextEpochFrames, undefined);

  // The SVM, resumed from the checkpoint, sends the same: they leave, in order.
  out.secondaryOutput(segment(10, 20));
  out.secondaryOutput(segment(20, 30));
  assert.deepEqual(sent, [next1, next2]);
});

test("compare output: a next-epoch frame's compare timeout counts from when the PVM sent it, not from its release into the comparator", () => {
  const now = { t: 1000 };
  const { out, diverged } = output(now);
  out.seal();
  out.output(segment(0, 10));
  now.t += 150; // the secondary's load took longer than the 100 ms compare timeout
  assert.deepEqual(out.committed(), []);
  out.checkExpired();
  assert.equal(diverged.length, 1);
  assert.equal(diverged[0]?.reason, "timeout");
  assert.match(diverged[0]?.detail ?? "", /held 150 ms/);
});

test("compare output: the secondary lost between the pause and SVM_READY: everything held leaves, the checkpoint's frames first", () => {
  const now = { t: 0 };
  const { out } = output(now);
  const a = segment(0, 10);
  const b = segment(10, 20);
  const c = segment(20, 30);
  out.output(a);
  out.seal();
  out.output(b);
  out.output(c);
  assert.deepEqual(out.releaseAll(), [a, b, c]);
  // Without a seal, frames are compared at once again.
  out.output(segment(30, 40));
  assert.equal(out.stats().heldFrames, 1);
});

test("compare output: a divergent next-epoch frame is compared after the release and asks for a checkpoint then", () => {
  const now = { t: 0 };
  const { out, diverged, sent } = output(now);
  out.seal();
  out.output(segment(0, 10));
  out.committed();
  out.secondaryOutput(segment(0, 10, 7)); // the SVM computed other bytes
  assert.equal(sent.length, 0);
  assert.equal(diverged.length, 1);
  assert.equal(diverged[0]?.reason, "payload");
});

test("compare output: between seal() and committed() no held frame expires: the checkpoint releases them (no second checkpoint for them)", () => {
  const now = { t: 0 };
  const { out, diverged, sent } = output(now);
  const held = segment(0, 10);
  out.output(held);
  out.seal();
  now.t += 500; // a commit longer than the 100 ms compare timeout
  out.checkExpired();
  assert.equal(diverged.length, 0, "no timeout for a frame the checkpoint is releasing");
  assert.deepEqual(out.committed(), [held]);
  assert.equal(sent.length, 0);
  out.output(segment(10, 20));
  now.t += 150;
  out.checkExpired();
  assert.equal(diverged[0]?.reason, "timeout", "after the commit, the compare timeout counts again");
});
