import { test } from "node:test";
import assert from "node:assert/strict";
import { LoopDelay } from "./loop-delay.js";

test("loop delay: a stall past the threshold is reported once, with its length", async () => {
  const stalls: number[] = [];
  const d = new LoopDelay((ms) => stalls.push(ms), 100);
  try {
    await new Promise((r) => setTimeout(r, 120));
    const until = performance.now() + 300;
    while (performance.now() < until) {
      // blocked
    }
    await new Promise((r) => setTimeout(r, 120));
    assert.equal(stalls.length, 1, JSON.stringify(stalls));
    assert.ok((stalls[0] ?? 0) >= 240 && (stalls[0] ?? 0) < 1000, JSON.stringify(stalls));
  } finally {
    d.stop();
  }
});

test("loop delay: a 200 ms synchronous stretch shows as a max of about 200 ms", async () => {
  const d = new LoopDelay();
  try {
    await new Promise((r) => setTimeout(r, 60));
    const quiet = d.snapshot();
    assert.ok(quiet.samples > 0, "the monitor samples");
    const until = performance.now() + 200;
    while (performance.now() < until) {
      // the event loop is blocked here, as in a long page compare
    }
    await new Promise((r) => setTimeout(r, 40));
    const s = d.snapshot();
    assert.ok(s.maxMs >= 170, `max ${s.maxMs} ms after a 200 ms block`);
    assert.ok(s.maxMs < 2000, `max ${s.maxMs} ms`);
    assert.ok(s.meanMs > 0 && s.p99Ms <= s.maxMs);
    assert.equal(s.resolutionMs, 10);
  } finally {
    d.stop();
  }
});
