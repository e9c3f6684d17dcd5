import { test } from "node:test";
import assert from "node:assert/strict";
import { OutputBuffer } from "./output-buffer.js";

const f = (n: number, len = 10) => new Uint8Array(len).fill(n);

test("output buffer: frames leave only when their checkpoint is acknowledged, in order", () => {
  const b = new OutputBuffer();
  b.hold(f(1));
  b.hold(f(2));
  const e0 = b.seal();
  b.hold(f(3));
  assert.deepEqual(b.release(e0 - 1), []);
  assert.deepEqual(b.release(e0).map((x) => x[0]), [1, 2]);
  const e1 = b.seal();
  b.hold(f(4));
  assert.equal(b.stats().heldFrames, 2);
  assert.deepEqual(b.release(e1).map((x) => x[0]), [3]);
  assert.deepEqual(b.releaseAll().map((x) => x[0]), [4]);
  assert.deepEqual(b.stats(), { heldFrames: 0, heldBytes: 0, releasedFrames: 4, droppedFrames: 0 });
});

test("output buffer: bounded; an acknowledgement releases older epochs too", () => {
  const b = new OutputBuffer(25);
  b.hold(f(1));
  b.hold(f(2));
  b.hold(f(3)); // 30 > 25: dropped
  assert.equal(b.stats().droppedFrames, 1);
  const e0 = b.seal();
  b.hold(f(4, 5));
  const e1 = b.seal();
  assert.equal(e1, e0 + 1);
  assert.deepEqual(b.release(e1).map((x) => x[0]), [1, 2, 4]);
  assert.equal(b.stats().heldBytes, 0);
});
