import assert from "node:assert/strict";
import { test } from "node:test";
import { elapsedMs, monotonicMs } from "./clock.js";
import { steppedWallClock } from "./clock-testing.js";

test("monotonic clock: runs at the host's pace, never backwards, and ignores a stepped wall clock", async (t) => {
  const wall = steppedWallClock(t);
  const t0 = monotonicMs();
  let last = t0;
  for (let i = 0; i < 1000; i++) {
    const now = monotonicMs();
    assert.ok(now >= last, "never backwards");
    last = now;
  }
  wall.jump(-86_400_000);
  await new Promise((r) => setTimeout(r, 50));
  const waited = elapsedMs(t0);
  assert.ok(waited >= 49 && waited < 1000, `50 ms of timers read as ${waited} ms, whatever Date says`);
  assert.ok(Number.isInteger(waited));
});
