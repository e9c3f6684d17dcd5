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
import { StreamReader } from "../state/index.js";
import { PrimaryReplicator, type PrimaryVm } from "./primary.js";
import { SecondaryReplicator } from "./secondary.js";
import { connection, fakeEngine, fakeSecondaryVm, within } from "./testing.js";

async function until(what: string, fn: () => boolean, ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  while (!fn()) {
    if (performance.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test("primary: an operator stop during a slow checkpoint ends in order after it; the secondary discards, no takeover", async (t) => {
  const pvm = fakeEngine();
  await pvm.start();
  const logs: string[] = [];
  const vm: PrimaryVm = {
    engine: pvm,
    pause: () => pvm.pause(),
    resume: () => pvm.resume(),
    setOutputFilter: () => undefined,
    setInputFilter: () => undefined,
    sendOutput: () => undefined,
    disks: [],
    end: () => Promise.resolve(),
  };
  const link = connection();
  const primary = new PrimaryReplicator(vm, link.primary, "secondary", {
    mode: "remus",
    intervalMs: 60_000,
    timeoutMs: 30_000,
    heartbeatMs: 50,
    midCheckpointDelayMs: 2500,
    log: (m) => logs.push(m),
  });
  const svm = fakeEngine();
  await svm.start({ paused: true });
  let takeOvers = 0;
  const discards: string[] = [];
  const secondaryVm = fakeSecondaryVm(svm, [], {
    takeOver: () => {
      takeOvers++;
      return Promise.resolve();
    },
    discard: (reason) => {
      discards.push(reason);
      return Promise.resolve();
    },
  });
  const reader = new StreamReader(link.secondary);
  const secondary = new SecondaryReplicator(secondaryVm, link.secondary, reader, "primary", { timeoutMs: 30_000, heartbeatMs: 50, log: () => undefined });
  t.after(async () => {
    link.secondary.destroy();
    link.primary.destroy();
    await primary.releaseLease();
  });
  const started = primary.start({ path: "/etc/colo/guest.cfg", text: 'name = "guest"\n' });
  assert.equal((await reader.next())?.kind, "vm-config");
  await secondary.receiveInitial();
  const run = secondary.run();
  await started;

  const copiedBefore = pvm.copied.length;
  pvm.markDirty(1);
  const checkpoint = primary.checkpointNow(false);
  await until("the checkpoint sent its pages (now in its 2.5 s delay)", () => pvm.copied.length > copiedBefore, 10_000);
  const t0 = performance.now();
  await within(primary.stop("operator failover"), 20_000, "the stop");
  const waited = performance.now() - t0;
  assert.ok(waited > 1500, `the stop waited for the checkpoint in flight (${Math.round(waited)} ms)`);
  await checkpoint; // complete: the END came after it
  const reason = await within(run, 10_000, "the secondary's end");
  assert.equal(reason, "the primary ended replication");
  assert.equal(takeOvers, 0, "no takeover");
  assert.equal(discards.length, 1, "the copy discarded");
  assert.equal(primary.stats.mode, "unprotected");
  assert.ok(pvm.running, "the primary runs on");
  assert.ok(!logs.includes("the end of replication could not be written: the secondary may take over"), logs.join("; "));
});
