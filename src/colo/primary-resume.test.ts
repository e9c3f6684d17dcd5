import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import type { PrimaryVm } from "./primary.js";
import type { SecondaryVm } from "./secondary.js";
import type { FakeEngine } from "../engine/testing/fake-engine.js";
import { replicationPair, within } from "./testing.js";
import { MemorySink, StreamReader, type StreamRecord } from "../state/index.js";
import { DEFAULT_COMPARATOR_OPTIONS } from "./net/comparator.js";
import { seqAdd } from "./net/packet.js";
import { pattern, tcpFrame } from "./net/testing.js";

/** Compare mode (the secondary loads each checkpoint at once; Remus defers it), checkpoints only when the test asks. */
const COMPARE = {
  mode: "compare" as const,
  compare: { ...DEFAULT_COMPARATOR_OPTIONS, compareTimeoutMs: 600_000, minGapMs: 0, maxIntervalMs: 600_000 },
};

/** The guest's n-th reply segment (10 octets) of one TCP connection: the SVM never sends it here, so the comparator holds it until a checkpoint. */
function frame(n: number): Uint8Array {
  return tcpFrame({ seq: seqAdd(1_000_000, 1 + n * 10), ack: 5000, flags: "PA", payload: pattern(10, n * 10), sport: 6379, id: n, window: 1000 });
}

/** Resolves once `cond()` holds (checked every 2 ms), or fails after `ms`. */
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** A compare-mode pair whose PVM output reaches `lan` through the primary's filter, as the guest sends it; `resumes()` counts the PVM's resumes. */
async function comparePair(t: TestContext, secondaryVm: Partial<Omit<SecondaryVm, "engine" | "disks">> = {}) {
  const lan: Uint8Array[] = [];
  let filter: ((frame: Uint8Array) => boolean) | undefined;
  let resumed = 0;
  const r = await replicationPair(t, {
    primary: COMPARE,
    vm: (pvm): Partial<PrimaryVm> => ({
      setOutputFilter: (f) => (filter = f),
      sendOutput: (f) => lan.push(f),
      resume: async () => {
        await pvm.resume();
        resumed++;
      },
    }),
    secondaryVm,
  });
  const guestSends = (f: Uint8Array) => {
    if (!filter || filter(f)) lan.push(f);
  };
  return { r, lan, guestSends, resumes: () => resumed };
}

/** A pause() that waits until `open()` is called; `entered()` says whether it was called. */
function gatedPause(): { pause: () => Promise<void>; open: () => void; entered: () => boolean } {
  let open: () => void = () => undefined;
  let entered = false;
  const gate = new Promise<void>((resolve) => (open = resolve));
  const pause = async () => {
    entered = true;
    await gate;
  };
  return { pause, open, entered: () => entered };
}

/** The engine's loadState() waits until the returned function is called. */
function gateLoad(engine: FakeEngine): () => void {
  let open: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => (open = resolve));
  const load = engine.loadState.bind(engine);
  engine.loadState = async (...args: Parameters<typeof load>) => {
    await gate;
    return load(...args);
  };
  return open;
}

test("primary: the PVM resumes once the checkpoint is copied, before the secondary applied it; nothing it sends then leaves before SVM_READY, and the checkpoint's output leaves at SVM_READY", async (t) => {
  const { r, lan, guestSends, resumes } = await comparePair(t);
  // The secondary's load waits for the test: a slow standby (qemu) or a busy host.
  const openLoad = gateLoad(r.svm);

  guestSends(frame(1)); // epoch 1: unmatched, held for checkpoint 1
  assert.equal(lan.length, 0);
  const before = resumes();
  const cp = r.primary.checkpointNow(false);
  await until(() => resumes() > before && r.pvm.running, 2000, "the PVM to resume during the checkpoint");
  guestSends(frame(2)); // the next epoch, sent while the secondary still loads
  assert.equal(lan.length, 0, "neither the checkpoint's output nor the next epoch's leaves before SVM_READY");

  openLoad();
  const done = await within(cp, 2000, "the checkpoint");
  assert.deepEqual(lan, [frame(1)], "SVM_READY releases the checkpoint's output only");
  assert.ok(done.pauseMs <= done.commitMs, `pause ${done.pauseMs} ms <= commit ${done.commitMs} ms`);
  const snap = r.primary.stats.snapshot();
  const phases = Object.keys(snap.lastPauseBreakdownMs as Record<string, number>);
  assert.deepEqual(phases.slice(-3), ["resume", "send", "svmReady"], "the resume comes before the checkpoint is written and SVM_READY");
  assert.equal(snap.lastCommitMs, done.commitMs);

  // The next checkpoint covers frame 2.
  await within(r.primary.checkpointNow(false), 2000, "checkpoint 2");
  assert.deepEqual(lan, [frame(1), frame(2)]);
});

test("primary: the PVM runs while the secondary suspends (NEW to SVM_SUSPENDED); what it sends then belongs to this checkpoint and leaves at its SVM_READY", async (t) => {
  // The secondary's vCPU stop waits for the test: a slow standby.
  const svmPause = gatedPause();
  const { r, lan, guestSends, resumes } = await comparePair(t, { pause: svmPause.pause });
  guestSends(frame(1));
  const before = resumes();
  const cp = r.primary.checkpointNow(false);
  await until(svmPause.entered, 2000, "the secondary to suspend for checkpoint 1");
  assert.ok(r.pvm.running, "the PVM runs while the secondary suspends");
  guestSends(frame(2)); // before the PVM's pause: in the checkpoint's state, so its output
  assert.equal(lan.length, 0, "held until SVM_READY");
  // A slow suspend: several heartbeat periods (50 ms here) pass. No heartbeat may follow NEW (the stream's rules).
  await new Promise((resolve) => setTimeout(resolve, 200));
  svmPause.open();
  await within(cp, 2000, "checkpoint 1");
  assert.equal(resumes(), before + 1, "one pause and resume");
  assert.deepEqual(lan, [frame(1), frame(2)], "SVM_READY releases what the PVM sent up to its pause");
  assert.equal(r.primary.stats.mode, "primary", "replication goes on (no heartbeat broke the checkpoint)");
  const phases = Object.keys(r.primary.stats.snapshot().lastPauseBreakdownMs as Record<string, number>);
  assert.deepEqual(phases.slice(0, 3), ["new", "svmSuspended", "pause"], "NEW and the secondary's answer come before the PVM's pause");
});

test("primary: an operator checkpoint asked for while one is being written (after its seal) is the next one, at once, not at the maximum interval", async (t) => {
  const { r, resumes } = await comparePair(t);
  const openLoad = gateLoad(r.svm);
  const before = resumes();
  const first = r.primary.checkpointNow(false);
  await until(() => resumes() > before, 2000, "the PVM to resume during the checkpoint");
  const second = r.primary.checkpointNow(false); // its output, its state: the next checkpoint's
  openLoad();
  const a = await within(first, 2000, "the first checkpoint");
  const b = await within(second, 2000, "the second checkpoint (the maximum interval here is 600 s)");
  assert.equal(b.checkpoint, a.checkpoint + 1);
});

test("primary: the secondary lost while it loads (the PVM already resumed): the checkpoint's and the next epoch's output leave, in order, and the VM runs on", async (t) => {
  const { r, lan, guestSends, resumes } = await comparePair(t);
  // The secondary's host dies while it loads: its load ends only after the cut (then it finds the link gone).
  const openLoad = gateLoad(r.svm);
  guestSends(frame(1));
  const before = resumes();
  const cp = r.primary.checkpointNow(false);
  await until(() => resumes() > before && r.pvm.running, 2000, "the PVM to resume during the checkpoint");
  guestSends(frame(2));
  r.link.secondary.destroy();
  r.link.primary.destroy();
  await assert.rejects(within(cp, 2000, "the checkpoint"));
  await until(() => r.primary.stats.mode === "unprotected", 2000, "running on unprotected");
  assert.deepEqual(lan, [frame(1), frame(2)]);
  assert.ok(r.pvm.running);
  guestSends(frame(3));
  assert.deepEqual(lan, [frame(1), frame(2), frame(3)], "unprotected: output goes out at once");
  assert.equal(r.pvm.running, true);
  openLoad();
  await within(r.run, 5000, "the secondary's end");
});

test("primary: input that reaches the PVM after its resume, while the checkpoint is still being written, is mirrored after CHECKPOINT_END (the next epoch's)", async (t) => {
  const capture = new MemorySink();
  let inputFilter: ((frame: Uint8Array) => Uint8Array | undefined) | undefined;
  const late = frame(7);
  let armed = false;
  let capturedAtResume = -1;
  const r = await replicationPair(t, {
    primary: { ...COMPARE, capture },
    vm: (pvm): Partial<PrimaryVm> => ({
      setInputFilter: (f) => (inputFilter = f),
      resume: async () => {
        await pvm.resume();
        if (!armed) return;
        armed = false;
        capturedAtResume = capture.length;
        inputFilter?.(late); // a frame from the LAN, the moment the PVM runs again
      },
    }),
  });
  armed = true;
  await within(r.primary.checkpointNow(false), 2000, "checkpoint 1");
  assert.ok(capturedAtResume > 0, "the PVM resumed during the checkpoint");

  const reader = new StreamReader(capture.bytes());
  const records: StreamRecord[] = [];
  for (;;) {
    const rec = await reader.next().catch(() => undefined);
    if (!rec) break;
    records.push(rec);
  }
  const ends = records.filter((x) => x.kind === "checkpoint-end");
  assert.equal(ends.length, 2, "checkpoint 0 and checkpoint 1");
  const end1 = ends[1] as StreamRecord & { offset: number };
  const mirrored = records.find((x) => x.kind === "net-frame" && Buffer.from(x.net.frame).equals(Buffer.from(late))) as (StreamRecord & { offset: number }) | undefined;
  assert.ok(mirrored, "the late frame was mirrored");
  assert.ok(mirrored.offset > end1.offset, `mirrored at ${mirrored.offset}, after CHECKPOINT_END at ${end1.offset}`);
  assert.ok(capturedAtResume <= end1.offset, `resumed at stream offset ${capturedAtResume}, before CHECKPOINT_END at ${end1.offset}`);
});
