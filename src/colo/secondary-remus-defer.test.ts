/**
 * A Remus secondary loads the device state once, at a takeover, not at
 * every checkpoint: its SVM does not run until then. Each complete
 * checkpoint's pages go into RAM at once (and to the dirty tracker's copy,
 * pagesCopied), its engine state is kept; a takeover loads the last
 * complete checkpoint's state with every page applied since the engine
 * last loaded one, before the VM takes over. A checkpoint cut short is
 * discarded whole. Compare mode still loads at every checkpoint (its SVM
 * runs from each one). Driven through the real SecondaryReplicator with a
 * fake engine, over an in-memory connection to a fake primary that writes
 * the records in PrimaryReplicator's order; no VM.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { PAGE_SIZE } from "../engine/engine.js";
import { page, secondarySession as session, type FakePrimary } from "./testing.js";

/** A page the SVM's dirty tracker names when asked (marked before a checkpoint). */
const SVM_DIRTY_PFN = 5;

/** `pfns` in ascending order (the secondary keeps a takeover's pages as a set: their order is not part of the contract). */
function ascending(pfns: readonly number[] | undefined): number[] | undefined {
  return pfns === undefined ? undefined : [...pfns].sort((a, b) => a - b);
}

/** The bytes of a state blob, for messages and comparisons. */
function blob(text: string): Uint8Array {
  return Uint8Array.from(Buffer.from(text));
}

/** Checkpoint 0's load: the whole machine (no changedPages), FakeEngine.saveState()'s one-octet blob. */
const CHECKPOINT0_LOAD = { state: new Uint8Array(1), changedPages: undefined };

for (const mode of ["remus", undefined] as const) {
  test(`secondary (${mode === undefined ? "no REPLICATION_MODE: Remus by default" : "remus"}): a complete checkpoint writes its pages into RAM and the tracker's copy, loads no state, and sends an empty SVM dirty list`, async (t) => {
    const s = await session(t, mode);
    assert.deepEqual(s.svm.loads, [CHECKPOINT0_LOAD], "checkpoint 0 was loaded whole");
    const takes = s.svm.dirtyTakes;
    // The tracker would name a page if asked: a Remus secondary does not ask (its SVM has not run).
    s.svm.markDirty(SVM_DIRTY_PFN);

    const svmDirty = await s.primary.checkpoint([1, 3], 0x11, blob("state 1"));

    assert.deepEqual(svmDirty, [], "the SVM's dirty list at NEW is empty");
    assert.equal(s.svm.dirtyTakes, takes, "no takeDirtyPages() during the checkpoint");
    assert.deepEqual(s.svm.loads, [CHECKPOINT0_LOAD], "no loadState() at the checkpoint");
    for (const pfn of [1, 3]) assert.deepEqual(page(s.svm.ram(), pfn), page(s.primary.engine.ram(), pfn), `page ${pfn} is in the SVM's RAM`);
    assert.deepEqual(page(s.svm.ram(), 2), new Uint8Array(PAGE_SIZE).fill(0xa2), "a page the checkpoint did not carry keeps checkpoint 0's bytes");
    assert.deepEqual(s.svm.copied, [[1, 3]], "pagesCopied() got the checkpoint's pages");
    assert.equal(s.secondary.applied, 2, "checkpoint 1 applied");

    s.primary.vanish();
    await s.run;
  });
}

test("secondary (remus): after two checkpoints, a takeover loads the second one's state once, with both checkpoints' pages, before the VM takes over", async (t) => {
  const s = await session(t, "remus");
  await s.primary.checkpoint([1, 3], 0x11, blob("state 1"));
  await s.primary.checkpoint([3, 6], 0x22, blob("state 2"));
  assert.deepEqual(s.svm.loads, [CHECKPOINT0_LOAD], "no loadState() at either checkpoint");
  assert.deepEqual(s.svm.copied, [[1, 3], [3, 6]]);
  assert.deepEqual(s.takeOvers, [], "no takeover while the primary is there");

  s.primary.vanish();
  const reason = await s.run;

  assert.match(reason, /ended/, "the secondary saw the primary's end of the stream");
  assert.equal(s.svm.loads.length, 2, "one loadState() at the takeover");
  const load = s.svm.loads[1];
  assert.deepEqual(load?.state, blob("state 2"), "the last checkpoint's state");
  assert.deepEqual(ascending(load?.changedPages), [1, 3, 6], "every page applied since checkpoint 0's load, each once");
  assert.deepEqual(s.takeOvers, [2], "the VM took over once, after the load");
  assert.deepEqual(page(s.svm.ram(), 1), new Uint8Array(PAGE_SIZE).fill(0x11));
  assert.deepEqual(page(s.svm.ram(), 3), new Uint8Array(PAGE_SIZE).fill(0x22));
  assert.deepEqual(page(s.svm.ram(), 6), new Uint8Array(PAGE_SIZE).fill(0x22));
  assert.ok(s.logs.includes("loaded the last checkpoint's device state for the takeover"), s.logs.join("; "));
});

/** Where the primary goes away inside checkpoint 2, after its NEW. */
const CUTS = {
  "after some of its pages": async (p: FakePrimary) => {
    await p.pages([3, 6], 0x33);
  },
  "after its CHECKPOINT, before the disk records and CHECKPOINT_END": async (p: FakePrimary) => {
    await p.pages([3, 6], 0x33);
    await p.state(blob("state 2 (cut)"));
  },
} as const;

for (const [where, cut] of Object.entries(CUTS)) {
  test(`secondary (remus): a checkpoint cut ${where} is discarded; the takeover loads the last complete one`, async (t) => {
    const s = await session(t, "remus");
    await s.primary.checkpoint([1, 3], 0x11, blob("state 1"));
    assert.deepEqual(s.svm.loads, [CHECKPOINT0_LOAD], "checkpoint 1's state is kept, not loaded");
    const svmDirty = await s.primary.begin();
    assert.deepEqual(svmDirty, []);
    await cut(s.primary);
    s.primary.vanish();
    assert.match(await s.run, /ended/, "the secondary saw the primary's end of the stream");

    assert.equal(s.secondary.stats.discardedCheckpoints, 1, "the cut checkpoint counts as discarded");
    assert.equal(s.secondary.applied, 2, "checkpoint 2 was not applied");
    assert.equal(s.svm.loads.length, 2, "one loadState() at the takeover");
    const load = s.svm.loads[1];
    assert.deepEqual(load?.state, blob("state 1"), "checkpoint 1's state, the last complete one");
    assert.deepEqual(ascending(load?.changedPages), [1, 3], "checkpoint 1's pages only");
    assert.deepEqual(s.takeOvers, [2], "the VM took over after the load");
    assert.deepEqual(page(s.svm.ram(), 3), new Uint8Array(PAGE_SIZE).fill(0x11), "page 3 holds checkpoint 1's bytes, not the cut checkpoint's");
    assert.deepEqual(page(s.svm.ram(), 6), new Uint8Array(PAGE_SIZE).fill(0xa6), "page 6 holds checkpoint 0's bytes, not the cut checkpoint's");
    assert.deepEqual(s.svm.copied, [[1, 3]], "the cut checkpoint's pages never reached the tracker's copy");
  });
}

test("secondary (compare): every checkpoint loads its state with its pages, the SVM's dirty list included; the takeover loads nothing more", async (t) => {
  const s = await session(t, "compare");
  s.svm.markDirty(SVM_DIRTY_PFN); // the running SVM wrote it
  const svmDirty = await s.primary.checkpoint([1, 3], 0x11, blob("state 1"));
  assert.deepEqual(svmDirty, [SVM_DIRTY_PFN], "the SVM's dirty list names what it wrote");
  assert.deepEqual(s.svm.loads, [CHECKPOINT0_LOAD, { state: blob("state 1"), changedPages: [1, 3, SVM_DIRTY_PFN] }], "checkpoint 1 loaded");

  await s.primary.checkpoint([2, 6], 0x22, blob("state 2"));
  assert.deepEqual(s.svm.loads.slice(2), [{ state: blob("state 2"), changedPages: [2, 6] }], "checkpoint 2 loaded");
  assert.deepEqual(page(s.svm.ram(), SVM_DIRTY_PFN), new Uint8Array(PAGE_SIZE).fill(0x11), "the SVM's page was overwritten with the PVM's");

  s.primary.vanish();
  await s.run;
  assert.equal(s.svm.loads.length, 3, "no loadState() at the takeover");
  assert.deepEqual(s.takeOvers, [3]);
});
