/**
 * An operator stop (`colo failover` on the primary) while a checkpoint is
 * in flight: the END waits for the checkpoint, so the secondary discards
 * its copy instead of taking over. Before, the stop gave the checkpoint 2 s
 * and then cut the connection: a slow checkpoint (a loaded CI host) made
 * the secondary take over while the primary ran on, two copies. Real
 * PrimaryReplicator and SecondaryReplicator over an in-memory connection,
 * fake engines; Remus mode, a checkpoint held 2.5 s by the test hook.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { replicationPair, within } from "./testing.js";

async function until(what: string, fn: () => boolean, ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  while (!fn()) {
    if (performance.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test("primary: an operator stop during a slow checkpoint ends in order after it; the secondary discards, no takeover", async (t) => {
  const p = await replicationPair(t, { primary: { midCheckpointDelayMs: 2500 } });
  const copiedBefore = p.pvm.copied.length;
  p.pvm.markDirty(1);
  const checkpoint = p.primary.checkpointNow(false);
  await until("the checkpoint sent its pages (now in its 2.5 s delay)", () => p.pvm.copied.length > copiedBefore, 10_000);
  const t0 = performance.now();
  await within(p.primary.stop("operator failover"), 20_000, "the stop");
  const waited = performance.now() - t0;
  assert.ok(waited > 1000, `the stop waited for the checkpoint in flight (${Math.round(waited)} ms)`);
  await checkpoint; // complete: the END came after it
  const reason = await within(p.run, 10_000, "the secondary's end");
  assert.equal(reason, "the primary ended replication");
  assert.equal(p.takeOvers, 0, "no takeover");
  assert.equal(p.discards.length, 1, "the copy discarded");
  assert.equal(p.primary.stats.mode, "unprotected");
  assert.ok(p.pvm.running, "the primary runs on");
  assert.ok(!p.logs.includes("the end of replication could not be written: the secondary may take over"), p.logs.join("; "));
});
