import { test } from "node:test";
import assert from "node:assert/strict";
import { Comparator } from "./comparator.js";
import { seqAdd } from "./packet.js";
import { pattern, tcpFrame } from "./testing.js";

const ISN = 2_000_000;

/** One side's segment of stream octets [from, to) (the SVM's already rewritten: the same headers). */
function segment(from: number, to: number): Uint8Array {
  return tcpFrame({ seq: seqAdd(ISN, 1 + from), ack: 7000, flags: "PA", payload: pattern(to - from, from), sport: 6379, id: 100 + from, window: 1000 });
}

test("comparator: the hold time of frames released by compare (PVM frame to the SVM's match), as p50/p99/max of the last ones", () => {
  const c = new Comparator();
  assert.deepEqual(c.stats().holdMs, { samples: 0, p50: 0, p99: 0, max: 0 });
  // 100 replies; the SVM's match comes 1 ms later for 98 of them, 5 ms and 40 ms later for the last two.
  let now = 1000;
  const lags = [...Array.from({ length: 98 }, () => 1), 5, 40];
  lags.forEach((lag, i) => {
    const from = i * 10;
    assert.deepEqual(c.primary(segment(from, from + 10), now).release, [], "held until the SVM's output matches");
    now += lag;
    assert.equal(c.secondary(segment(from, from + 10), now).release.length, 1, "released on the match");
    now += 3;
  });
  const h = c.stats().holdMs;
  assert.equal(h.samples, 100);
  assert.equal(h.p50, 1);
  assert.equal(h.p99, 40);
  assert.equal(h.max, 40);
  assert.equal(c.stats().releasedMatched, 100);
});

test("comparator: the hold-time window keeps the last 1024 releases", () => {
  const c = new Comparator();
  let now = 0;
  for (let i = 0; i < 1100; i++) {
    const from = i * 4;
    c.primary(segment(from, from + 4), now);
    now += i < 100 ? 50 : 2; // the first 100 slow, then fast: they age out of the window
    c.secondary(segment(from, from + 4), now);
  }
  const h = c.stats().holdMs;
  assert.equal(h.samples, 1024);
  assert.equal(h.max, 50, "24 of the slow ones are still in the window");
  assert.equal(h.p50, 2);
});
