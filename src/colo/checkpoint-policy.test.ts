import assert from "node:assert/strict";
import { test } from "node:test";
import { CheckpointPolicy } from "./checkpoint-policy.js";

test("policy: periodic checkpoint after the maximum interval when nothing diverges", () => {
  const p = new CheckpointPolicy({ minGapMs: 100, maxIntervalMs: 20_000 }, 0);
  assert.deepEqual(p.decide(5_000), { waitMs: 15_000 });
  assert.deepEqual(p.decide(20_000), { checkpoint: "periodic" });
  p.sealed();
  p.done("periodic", 20_050);
  assert.deepEqual(p.decide(20_060), { waitMs: 19_990 });
  assert.equal(p.counts.periodic, 1);
});

test("policy: a divergence checkpoints at once, but never closer than the minimum gap", () => {
  const p = new CheckpointPolicy({ minGapMs: 100, maxIntervalMs: 20_000 }, 0);
  p.request("payload");
  assert.deepEqual(p.decide(500), { checkpoint: "payload" });
  p.sealed();
  p.done("payload", 520);
  p.request("timeout");
  p.request("payload"); // the first reason since the last checkpoint is the one counted
  assert.deepEqual(p.decide(560), { waitMs: 60 });
  assert.deepEqual(p.decide(620), { checkpoint: "timeout" });
  p.sealed();
  p.done("timeout", 640);
  assert.equal(p.requested, undefined);
  assert.deepEqual({ payload: p.counts.payload, timeout: p.counts.timeout }, { payload: 1, timeout: 1 });
});

test("policy: a storm of divergences yields at most one checkpoint per gap", () => {
  const p = new CheckpointPolicy({ minGapMs: 100, maxIntervalMs: 20_000 }, 0);
  let checkpoints = 0;
  for (let now = 0; now < 10_000; now += 1) {
    p.request("payload");
    const d = p.decide(now);
    if ("checkpoint" in d) {
      p.sealed();
      p.done(d.checkpoint, now);
      checkpoints++;
    }
  }
  assert.ok(checkpoints <= 100, `${checkpoints} checkpoints in 10 s with a 100 ms gap`);
  assert.ok(checkpoints >= 99, `${checkpoints}: the gap must not starve the guest either`);
});

test("policy: bad options are refused", () => {
  assert.throws(() => new CheckpointPolicy({ minGapMs: -1, maxIntervalMs: 10 }, 0), /bad checkpoint policy/);
  assert.throws(() => new CheckpointPolicy({ minGapMs: 0, maxIntervalMs: 0 }, 0), /bad checkpoint policy/);
});

test("policy: the secondary's disk backlog is a reason of its own, counted apart from the primary's", () => {
  const p = new CheckpointPolicy({ minGapMs: 100, maxIntervalMs: 20_000 }, 0);
  p.request("secondary-disk-backlog");
  assert.deepEqual(p.decide(50), { waitMs: 50 }, "it waits for the minimum gap like any reason");
  assert.deepEqual(p.decide(100), { checkpoint: "secondary-disk-backlog" });
  p.sealed();
  p.done("secondary-disk-backlog", 120);
  assert.deepEqual([p.counts["secondary-disk-backlog"], p.counts["disk-backlog"]], [1, 0]);
});

test("policy: a request made while a checkpoint runs, after its seal, asks for the next one (it is not cleared by done)", () => {
  const p = new CheckpointPolicy({ minGapMs: 100, maxIntervalMs: 20_000 }, 0);
  p.request("operator");
  assert.deepEqual(p.decide(200), { checkpoint: "operator" });
  p.request("payload"); // before the seal: served by this checkpoint
  p.sealed();
  assert.equal(p.requested, undefined);
  p.request("payload"); // after the seal: the next epoch's divergence
  p.done("operator", 260);
  assert.equal(p.requested, "payload");
  assert.deepEqual(p.decide(300), { waitMs: 60 }, "the minimum gap still holds");
  assert.deepEqual(p.decide(360), { checkpoint: "payload" });
  assert.deepEqual([p.counts.operator, p.counts.payload], [1, 0]);
});
