import { test } from "node:test";
import assert from "node:assert/strict";
import { checkIncrKey, type IncrEvent } from "./incr-check.js";
import { AckStats } from "./ack-stats.js";

const ack = (value: number, generation = 0): IncrEvent => ({ acked: true, value, generation });
const lost = (generation = 0): IncrEvent => ({ acked: false, generation });
const kinds = (events: IncrEvent[], final: string | null): string[] =>
  checkIncrKey(0, "k", events, final).problems.map((p) => p.kind);

test("incr check: steps of exactly 1 and a final equal to the last acknowledgement are fine", () => {
  const { result, problems } = checkIncrKey(3, "k", [ack(1), ack(2), ack(3)], "3");
  assert.deepEqual(problems, []);
  assert.deepEqual(result, { conn: 3, key: "k", acknowledged: 3, unacknowledged: 0, generations: 1, lastAcked: 3, final: 3, ok: true });
});

test("incr check: a gap without unacknowledged INCRs is a violation, even across a reconnect", () => {
  assert.deepEqual(kinds([ack(1), ack(3)], "3"), ["gap"]);
  assert.deepEqual(kinds([ack(1), ack(3, 1)], "3"), ["gap"]);
  assert.deepEqual(kinds([ack(2)], "2"), ["gap"], "a fresh key starts at 0");
});

test("incr check: an unacknowledged INCR may or may not have been applied", () => {
  assert.deepEqual(kinds([ack(1), lost(0), ack(2, 1)], "2"), [], "not applied");
  assert.deepEqual(kinds([ack(1), lost(0), ack(3, 1)], "3"), [], "applied");
  assert.deepEqual(kinds([ack(1), lost(0), ack(4, 1)], "4"), ["gap"], "one unacknowledged INCR adds at most 1");
  assert.deepEqual(kinds([ack(1), lost(0)], "1"), []);
  assert.deepEqual(kinds([ack(1), lost(0)], "2"), []);
  assert.deepEqual(kinds([ack(1), lost(0)], "3"), ["final-above-sent"]);
  assert.deepEqual(kinds([lost(0)], null), []);
});

test("incr check: acknowledged increments that vanish", () => {
  assert.deepEqual(kinds([ack(1), ack(2), ack(2, 1)], "2"), ["went-back"]);
  assert.deepEqual(kinds([ack(1), ack(2), ack(3)], "1"), ["final-below-acked"]);
  assert.deepEqual(kinds([ack(1)], null), ["final-below-acked"], "the key is gone");
  assert.deepEqual(kinds([ack(1)], "one"), ["not-an-integer"]);
});

test("ack stats: 1-second buckets, the longest gap and when it began", () => {
  const s = new AckStats();
  for (const t of [10, 20, 900, 1500, 4200, 4300]) s.record(t);
  assert.deepEqual(s.opsPerSecond(), [3, 1, 0, 0, 2]);
  assert.deepEqual(s.opsPerSecond(6500), [3, 1, 0, 0, 2, 0, 0]);
  assert.equal(s.maxGapMs, 2700);
  assert.equal(s.maxGapAtMs, 1500);
  assert.equal(s.lastAckAtMs, 4300);
});
