/**
 * What a session records of each checkpoint (status `recentCheckpoints`)
 * and tells its observers (the daemon's metrics): numbers, reasons, the
 * divergence that asked for a checkpoint with its flow and place, phases,
 * failovers. The primary is driven through the real PrimaryReplicator and
 * SecondaryReplicator over an in-memory connection, fake engines; no VM.
 */
import assert from "node:assert/strict";
import { test, type TestContext } from "node:test";
import { CompareOutput } from "./compare-output.js";
import { DEFAULT_COMPARATOR_OPTIONS, type Divergence } from "./net/comparator.js";
import { udpFrame } from "./net/testing.js";
import type { PrimaryReplicator } from "./primary.js";
import { RECENT_CHECKPOINTS, ReplicationStats, type CheckpointRecord, type FailoverEvent, type ReplicationMode } from "./replication-stats.js";
import { replicationPair } from "./testing.js";

test("replication stats: checkpoints numbered and kept (the last RECENT_CHECKPOINTS), observers told of each checkpoint and failover", () => {
  const stats = new ReplicationStats("primary", "h2:8002", "compare");
  const seen: { record: CheckpointRecord; phases: Record<string, number> | undefined }[] = [];
  const failovers: { event: FailoverEvent; mode: ReplicationMode }[] = [];
  const stop = stats.observe({ checkpoint: (record, phases) => seen.push({ record, phases }), failover: (event, mode) => failovers.push({ event, mode }) });
  stats.recordCheckpoint({ pauseMs: 120, pages: 4000, bytes: 16_000_000, reason: "initial" });
  const divergence: Divergence = { reason: "payload", detail: "tcp a:1>b:2 at seq+7: PVM 0x01, SVM 0x02", flow: "tcp a:1>b:2", offset: 7 };
  stats.recordCheckpoint({ pauseMs: 40, pages: 30, bytes: 130_000, reason: "payload", phasesMs: { pause: 1, pages: 20 }, divergence });
  assert.equal(stats.checkpoints, 2);
  assert.deepEqual(stats.lastBreakdownMs, { pause: 1, pages: 20 });
  const recent = stats.recentCheckpoints();
  assert.deepEqual(
    recent.map((r) => [r.checkpoint, r.reason, r.pauseMs, r.pages, r.bytes]),
    [
      [0, "initial", 120, 4000, 16_000_000],
      [1, "payload", 40, 30, 130_000],
    ],
  );
  assert.deepEqual(recent[1]?.divergence, divergence);
  assert.ok(recent.every((r) => r.msAgo >= 0 && r.msAgo < 1000 && !Number.isNaN(Date.parse(r.at))));
  assert.deepEqual(
    seen.map((s) => [s.record.checkpoint, s.record.reason, s.phases]),
    [
      [0, "initial", undefined],
      [1, "payload", { pause: 1, pages: 20 }],
    ],
  );
  stats.failover("primary", "no word from the secondary for 1000 ms");
  assert.deepEqual(
    failovers.map((f) => [f.event.role, f.event.reason, f.mode]),
    [["primary", "no word from the secondary for 1000 ms", "unprotected"]],
  );
  // Only the last RECENT_CHECKPOINTS are kept; an unsubscribed observer hears nothing more.
  stop();
  for (let i = 0; i < RECENT_CHECKPOINTS + 5; i++) stats.recordCheckpoint({ pauseMs: i, pages: i, bytes: i, reason: "periodic" });
  const kept = stats.recentCheckpoints();
  assert.equal(kept.length, RECENT_CHECKPOINTS);
  assert.equal(kept[0]?.checkpoint, 7);
  assert.equal(kept.at(-1)?.checkpoint, RECENT_CHECKPOINTS + 6);
  assert.equal(seen.length, 2);
  assert.deepEqual((stats.snapshot().recentCheckpoints as unknown[]).length, RECENT_CHECKPOINTS);
  // A secondary gives the primary's numbering (its first applied is checkpoint 1).
  const secondary = new ReplicationStats("secondary", "h1");
  secondary.recordCheckpoint({ checkpoint: 1, pauseMs: 0, pages: 3, bytes: 0, phasesMs: { applyPages: 0.1, loadState: 2 } });
  assert.deepEqual(secondary.recentCheckpoints().map((r) => [r.checkpoint, r.reason]), [[1, undefined]]);
});

test("compare output: the divergence that asks for a checkpoint reaches the primary whole (flow and offset)", () => {
  const asked: Divergence[] = [];
  const out = new CompareOutput(DEFAULT_COMPARATOR_OPTIONS, () => undefined, (d) => asked.push(d), () => 0);
  out.output(udpFrame({ payload: "abc" }));
  out.secondaryOutput(udpFrame({ payload: "abd" }));
  assert.equal(asked.length, 1);
  assert.deepEqual({ reason: asked[0]?.reason, flow: asked[0]?.flow, offset: asked[0]?.offset }, { reason: "payload", flow: "udp 10.77.0.10:5353>10.77.0.2:53", offset: 2 });
  const last = out.stats().lastDivergence as Divergence | undefined;
  assert.equal(last?.flow, "udp 10.77.0.10:5353>10.77.0.2:53");
});

/** A Remus-mode primary replicating to a real secondary, past checkpoint 0. */
async function remusPair(t: TestContext): Promise<PrimaryReplicator> {
  return (await replicationPair(t)).primary;
}

test("primary: each checkpoint is recorded with the reason the policy counted, the divergence behind it and its phases", async (t) => {
  const primary = await remusPair(t);
  const done = new Promise<CheckpointRecord>((resolve) => primary.stats.observe({ checkpoint: (r) => r.checkpoint === 1 && resolve(r) }));
  const divergence: Divergence = { reason: "payload", detail: "udp a:1>b:2: octet 2 differs", flow: "udp a:1>b:2", offset: 2 };
  primary.request("payload", divergence);
  // A second reason before the checkpoint is not the one counted, and neither is its divergence.
  primary.request("timeout", { reason: "timeout", detail: "later", flow: "tcp c:3>d:4", offset: 9 });
  const first = await done;
  assert.equal(first.reason, "payload");
  assert.deepEqual(first.divergence, divergence);
  await primary.checkpointNow(false);
  const recent = primary.stats.recentCheckpoints();
  assert.deepEqual(
    recent.map((r) => [r.checkpoint, r.reason, r.divergence?.flow]),
    [
      [0, "initial", undefined],
      [1, "payload", "udp a:1>b:2"],
      [2, "operator", undefined],
    ],
  );
  const phases = primary.stats.lastBreakdownMs ?? {};
  for (const phase of ["pause", "new", "pvmDirty", "svmSuspended", "pages", "saveState", "send", "svmReady", "resume"]) assert.equal(typeof phases[phase], "number", phase);
  assert.deepEqual(primary.stats.snapshot().checkpointReasons, { ...zeroReasons(), payload: 1, operator: 1 });
});

function zeroReasons(): Record<string, number> {
  return { payload: 0, length: 0, timeout: 0, overflow: 0, "secondary-extra": 0, "disk-backlog": 0, "secondary-disk-backlog": 0, periodic: 0, operator: 0 };
}

test("replication stats: lastEngineStoppedMs shows the last checkpoint's engine-timed stop, only when the engine timed it", () => {
  const stats = new ReplicationStats("primary", "h2:8002", "compare");
  stats.recordCheckpoint({ pauseMs: 40, pages: 30, bytes: 130_000, reason: "payload" });
  assert.equal(stats.snapshot().lastEngineStoppedMs, undefined, "no engine figure: none shown");
  stats.recordCheckpoint({ pauseMs: 12, engineStoppedMs: 9.4, pages: 30, bytes: 130_000, reason: "payload" });
  assert.equal(stats.snapshot().lastEngineStoppedMs, 9.4);
  stats.recordCheckpoint({ pauseMs: 12, pages: 30, bytes: 130_000, reason: "payload" });
  assert.equal(stats.snapshot().lastEngineStoppedMs, undefined, "a checkpoint without it clears the last one's");
});
