/**
 * Failures of the primary's own VM are never swallowed (docs/replication.md
 * "Fencing and failures"): a fence drops every frame before it pauses the
 * VM, and a fence whose pause fails, or a resume that fails, ends the side
 * through PrimaryVm.end (the daemon destroys the VM and exits with 1). A
 * resume that fails after a checkpoint hands over: the secondary, which
 * holds that checkpoint, takes over. Driven through the real
 * PrimaryReplicator and SecondaryReplicator over an in-memory connection,
 * fake engines on both sides; no VM.
 */
import assert from "node:assert/strict";
import { test, type TestContext } from "node:test";
import type { Arbiter } from "./lease.js";
import type { PrimaryReplicator, PrimaryVm } from "./primary.js";
import { FakeArbiter, replicationPair, within } from "./testing.js";

interface Pair {
  primary: PrimaryReplicator;
  /** The PVM sends a frame: it reaches the LAN unless the output filter keeps it. */
  guestSends(frame: Uint8Array): void;
  /** Every frame that reached the LAN, in order. */
  lan: Uint8Array[];
  /** Fail the PVM's pause() / resume() from now on. */
  fail: { pause: boolean; resume: boolean };
  /** The reason of each PrimaryVm.end() call; `ended` resolves at the first. */
  ends: string[];
  ended: Promise<string>;
  /** The secondary's run(): resolves once it took over or stepped down. */
  secondaryRun: Promise<string>;
  takeOvers: number;
  /** The link breaks: both ends close. */
  cut(): void;
}

/** A primary replicating to a real secondary (Remus mode, no disks), past checkpoint 0. */
async function pair(t: TestContext, arbiter?: Arbiter): Promise<Pair> {
  const lan: Uint8Array[] = [];
  const ends: string[] = [];
  const fail = { pause: false, resume: false };
  let filter: ((frame: Uint8Array) => boolean) | undefined;
  let resolveEnded: (reason: string) => void = () => undefined;
  const ended = new Promise<string>((resolve) => (resolveEnded = resolve));
  const r = await replicationPair(t, {
    primary: arbiter ? { arbiter: { arbiter, vm: "guest", holder: "h1:1", ttlMs: 60_000 } } : {},
    vm: (pvm): Partial<PrimaryVm> => ({
      pause: () => (fail.pause ? Promise.reject(new Error("the engine does not answer")) : pvm.pause()),
      resume: () => (fail.resume ? Promise.reject(new Error("the engine does not answer")) : pvm.resume()),
      setOutputFilter: (f) => (filter = f),
      sendOutput: (frame) => lan.push(frame),
      end: (reason) => {
        ends.push(reason);
        resolveEnded(reason);
        return Promise.resolve();
      },
    }),
  });
  return {
    primary: r.primary,
    guestSends: (frame) => {
      if (!filter || filter(frame)) lan.push(frame);
    },
    lan,
    fail,
    ends,
    ended,
    secondaryRun: r.run,
    get takeOvers() {
      return r.takeOvers;
    },
    cut: () => {
      r.link.secondary.destroy();
      r.link.primary.destroy();
    },
  };
}

function frame(n: number): Uint8Array {
  return new Uint8Array(60).fill(n);
}

test("primary: a fence whose pause fails reports fenceFailed and ends the side; nothing is released after the fence started", async (t) => {
  const arbiter = new FakeArbiter();
  const p = await pair(t, arbiter);
  assert.equal(p.primary.stats.mode, "primary");
  p.guestSends(frame(1));
  p.guestSends(frame(2));
  assert.equal(p.lan.length, 0, "Remus: held until the next checkpoint");

  // The link and the arbiter are gone: no solo mark, so the fence; and the VM cannot be paused.
  arbiter.reachable = false;
  p.fail.pause = true;
  p.cut();
  const reason = await within(p.ended, 2000, "PrimaryVm.end()");

  assert.equal(reason, "fence failed: pausing the VM: the engine does not answer");
  assert.deepEqual(p.ends, [reason], "the side ends once");
  const status = p.primary.stats.snapshot();
  assert.equal(status.mode, "fenced");
  const failed = status.fenceFailed as { error: string; at: string } | undefined;
  assert.equal(failed?.error, "the engine does not answer");
  p.guestSends(frame(3)); // the VM could not be paused: it may still send
  assert.equal(p.lan.length, 0, "neither the held frames nor a later one reached the LAN");
  await p.secondaryRun;
});

test("primary: a resume that fails after a checkpoint reports resumeFailed, hands over to the secondary (it takes over) and ends the side", async (t) => {
  const p = await pair(t);
  p.guestSends(frame(1));
  p.fail.resume = true;
  await assert.rejects(p.primary.checkpointNow(false), /the engine does not answer/);
  const reason = await within(p.ended, 2000, "PrimaryVm.end()");

  assert.equal(reason, "resuming the VM after checkpoint 1 failed: the engine does not answer");
  const status = p.primary.stats.snapshot();
  assert.equal(status.mode, "handed-over");
  const failed = status.resumeFailed as { after: string; error: string } | undefined;
  assert.deepEqual({ after: failed?.after, error: failed?.error }, { after: "checkpoint 1", error: "the engine does not answer" });
  // The connection was dropped without an orderly end: the secondary takes over from checkpoint 1.
  await within(p.secondaryRun, 2000, "the secondary's takeover");
  assert.equal(p.takeOvers, 1);
  assert.deepEqual(p.lan, [frame(1)], "only the output checkpoint 1 covers was released");
  p.guestSends(frame(2));
  assert.equal(p.lan.length, 1, "nothing leaves after the hand-over");
});

test("primary: a resume that fails when running on unprotected (secondary lost, no arbiter) reports resumeFailed and ends the side", async (t) => {
  const p = await pair(t);
  p.fail.resume = true;
  p.cut();
  const reason = await within(p.ended, 2000, "PrimaryVm.end()");

  assert.equal(reason, "resuming the VM to run on unprotected failed: the engine does not answer");
  const status = p.primary.stats.snapshot();
  assert.equal(status.mode, "unprotected");
  const failed = status.resumeFailed as { after: string } | undefined;
  assert.equal(failed?.after, "running on unprotected");
  await p.secondaryRun;
});
