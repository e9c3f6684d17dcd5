/**
 * Whose failure ends a secondary's session (docs/replication.md
 * "Failover"): a failure of its own engine steps it down (no takeover, the
 * copy discarded, the connection closed so that the primary runs on
 * unprotected); the primary's end of the stream, or a stream that breaks
 * the protocol, is the primary's loss and, without an arbiter, a takeover.
 * Driven through the real SecondaryReplicator with a fake engine, over an
 * in-memory connection to a fake primary (src/colo/testing.ts); no VM.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { LoadStateOptions } from "../engine/engine.js";
import { FakeArbiter, secondarySession, within } from "./testing.js";

function blob(text: string): Uint8Array {
  return Uint8Array.from(Buffer.from(text));
}

test("secondary (compare): its engine's loadState failing at checkpoint 2 makes it step down: no takeover, the copy discarded, the connection closed", async (t) => {
  const s = await secondarySession(t, "compare", { discardable: true });
  const load = s.svm.loadState.bind(s.svm);
  // loads[0] is checkpoint 0, loads[1] checkpoint 1: the third load is checkpoint 2's.
  s.svm.loadState = (state: Uint8Array, opts?: LoadStateOptions) =>
    s.svm.loads.length === 2 ? Promise.reject(new Error("the standby engine exited")) : load(state, opts);
  await s.primary.checkpoint([1, 3], 0x11, blob("state 1"));
  assert.equal(s.secondary.applied, 2, "checkpoint 1 applied");

  // The secondary never answers SVM_READY: the primary's end sees the connection closed.
  await assert.rejects(s.primary.checkpoint([2, 6], 0x22, blob("state 2")), /ended before its END record|closed/);
  assert.ok(s.primary.socket.readableEnded, "the primary's end of the connection was closed by the secondary");
  const reason = await s.run;

  assert.equal(reason, "local failure: loading the checkpoint's engine state: the standby engine exited");
  assert.deepEqual(s.takeOvers, [], "no takeover");
  assert.deepEqual(s.discards, [`stepped down: ${reason}`], "the copy was discarded");
  const status = s.secondary.stats.snapshot();
  assert.equal(status.mode, "stepped-down");
  assert.deepEqual(
    s.secondary.stats.failovers.map((f) => ({ role: f.role, reason: f.reason })),
    [{ role: "secondary", reason }],
  );
  assert.equal(s.secondary.stats.discardedCheckpoints, 1, "checkpoint 2 was never applied");
  assert.ok(s.secondary.done);
});

test("secondary (remus): its own image failing while a checkpoint applies the primary's writes makes it step down", async (t) => {
  const s = await secondarySession(t, "remus", { discardable: true });
  await s.primary.diskWrite(1, 0, new Uint8Array(512).fill(7));
  s.image.failNextWrite = new Error("EIO: i/o error, write");
  await assert.rejects(s.primary.checkpoint([1], 0x11, blob("state 1")), /ended before its END record|closed/);
  const reason = await s.run;

  assert.match(reason, /^local failure: disk 0: applying checkpoint 1: .*EIO/);
  assert.deepEqual(s.takeOvers, [], "no takeover");
  assert.deepEqual(s.discards, [`stepped down: ${reason}`]);
  assert.equal(s.secondary.stats.mode, "stepped-down");
});

test("secondary (compare): the primary closing the connection is the primary's loss: without an arbiter it takes over", async (t) => {
  const s = await secondarySession(t, "compare", { discardable: true });
  await s.primary.checkpoint([1, 3], 0x11, blob("state 1"));
  s.primary.vanish();
  const reason = await s.run;

  assert.doesNotMatch(reason, /local failure/);
  assert.equal(s.takeOvers.length, 1, "it took over");
  assert.deepEqual(s.discards, []);
  assert.equal(s.secondary.stats.mode, "unprotected");
});

test("secondary (remus): a disk write the primary sent out of order breaks the protocol: the primary's fault, a takeover, not a step-down", async (t) => {
  const s = await secondarySession(t, "remus", { discardable: true });
  await s.primary.checkpoint([1], 0x11, blob("state 1"));
  await s.primary.diskWrite(5, 0, new Uint8Array(512).fill(1)); // the first write must be seq 1
  const reason = await s.run;

  assert.match(reason, /out of order/);
  assert.doesNotMatch(reason, /local failure/);
  assert.equal(s.takeOvers.length, 1, "it took over");
  assert.deepEqual(s.discards, []);
});

test("secondary: after a takeover, a fence (the lease ran out) whose pause fails reports fenceFailed and ends the side; its output is stopped first", async (t) => {
  const arbiter = new FakeArbiter();
  const ends: string[] = [];
  let resolveEnded: (reason: string) => void = () => undefined;
  const ended = new Promise<string>((resolve) => (resolveEnded = resolve));
  /** The VM operations, in order; the output filter as last set; frames sent to the LAN. */
  const events: string[] = [];
  let filter: ((frame: Uint8Array) => boolean) | undefined;
  let lan = 0;
  const s = await secondarySession(t, "remus", {
    arbiter,
    leaseMs: 300,
    vm: {
      pause: () => {
        events.push("pause");
        return Promise.reject(new Error("the engine does not answer"));
      },
      setOutputFilter: (f) => {
        events.push("filter");
        filter = f;
      },
      sendOutput: () => lan++,
      end: (reason) => {
        ends.push(reason);
        resolveEnded(reason);
        return Promise.resolve();
      },
    },
  });
  s.primary.vanish();
  await s.run;
  assert.equal(s.takeOvers.length, 1, "it took over, holding the lease");
  assert.equal(s.secondary.stats.mode, "unprotected");
  const sends = (): number => (filter === undefined || filter(new Uint8Array(60)) ? 1 : 0) + lan;
  assert.equal(sends(), 1, "the survivor's output reaches the LAN");
  lan = 0;
  events.length = 0;

  arbiter.reachable = false; // the lease runs out: the fence
  const reason = await within(ended, 3000, "SecondaryVm.end()");
  assert.equal(reason, "fence failed: pausing the VM: the engine does not answer");
  assert.deepEqual(ends, [reason]);
  assert.deepEqual(events, ["filter", "pause"], "the output filter was replaced before the pause was tried");
  assert.equal(sends(), 0, "nothing reaches the LAN after the fence");
  assert.equal(s.secondary.stats.mode, "fenced");
  assert.equal((s.secondary.stats.snapshot().fenceFailed as { error: string } | undefined)?.error, "the engine does not answer");
});
