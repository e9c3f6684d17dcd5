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
import { StreamReader } from "../state/index.js";
import type { Arbiter } from "./lease.js";
import { PrimaryReplicator, type PrimaryVm } from "./primary.js";
import { SecondaryReplicator } from "./secondary.js";
import { connection, FakeArbiter, fakeEngine, fakeSecondaryVm, within } from "./testing.js";

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
  const pvm = fakeEngine();
  await pvm.start();
  const lan: Uint8Array[] = [];
  const ends: string[] = [];
  const fail = { pause: false, resume: false };
  let filter: ((frame: Uint8Array) => boolean) | undefined;
  let resolveEnded: (reason: string) => void = () => undefined;
  const ended = new Promise<string>((resolve) => (resolveEnded = resolve));
  const vm: PrimaryVm = {
    engine: pvm,
    pause: () => (fail.pause ? Promise.reject(new Error("the engine does not answer")) : pvm.pause()),
    resume: () => (fail.resume ? Promise.reject(new Error("the engine does not answer")) : pvm.resume()),
    setOutputFilter: (f) => (filter = f),
    setInputFilter: () => undefined,
    sendOutput: (frame) => lan.push(frame),
    disks: [],
    end: (reason) => {
      ends.push(reason);
      resolveEnded(reason);
      return Promise.resolve();
    },
  };
  const link = connection();
  const primary = new PrimaryReplicator(vm, link.primary, "secondary", {
    mode: "remus",
    intervalMs: 60_000, // only the test's checkpoints
    timeoutMs: 30_000,
    heartbeatMs: 50,
    log: () => undefined,
    ...(arbiter ? { arbiter: { arbiter, vm: "guest", holder: "h1:1", ttlMs: 60_000 } } : {}),
  });
  const svm = fakeEngine();
  await svm.start({ paused: true });
  let takeOvers = 0;
  const secondaryVm = fakeSecondaryVm(svm, [], {
    takeOver: () => {
      takeOvers++;
      return Promise.resolve();
    },
  });
  const reader = new StreamReader(link.secondary);
  const secondary = new SecondaryReplicator(secondaryVm, link.secondary, reader, "primary", { timeoutMs: 30_000, heartbeatMs: 50, log: () => undefined });
  const cut = () => {
    link.secondary.destroy();
    link.primary.destroy();
  };
  t.after(async () => {
    cut();
    await primary.releaseLease();
  });
  const started = primary.start({ path: "/etc/colo/guest.cfg", text: 'name = "guest"\n' });
  const config = await reader.next(); // the daemon reads VM_CONFIG before it builds the secondary
  assert.equal(config?.kind, "vm-config");
  await secondary.receiveInitial();
  const secondaryRun = secondary.run();
  await started;
  const p: Pair = {
    primary,
    guestSends: (frame) => {
      if (!filter || filter(frame)) lan.push(frame);
    },
    lan,
    fail,
    ends,
    ended,
    secondaryRun,
    get takeOvers() {
      return takeOvers;
    },
    cut,
  };
  return p;
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
