import { test } from "node:test";
import assert from "node:assert/strict";
import { DiskReplicationError, type DiskReplicationErrorCode } from "./errors.js";
import { SecondaryDisk } from "./secondary-disk.js";
import { countMarked, HookedDisk, makeSpillDir, MemoryDisk, Prng, randomRange } from "./testing.js";

const fill = (n: number, len: number) => new Uint8Array(len).fill(n);
const code = (c: DiskReplicationErrorCode) => (e: unknown) => e instanceof DiskReplicationError && e.code === c;

interface InFlight {
  seq: number;
  offset: number;
  data: Uint8Array;
}

interface ModelRun {
  /** The secondary's whole view at the end of the run. */
  finalView: Uint8Array;
  checkpoints: number;
  failedOver: boolean;
  spilledBytes: number;
  /** Checkpoints applied while later PVM writes had already arrived. */
  checkpointsWithLaterWrites: number;
  /** Checkpoints rejected because covered writes were still in flight. */
  incompleteRejected: number;
  overlayCompactions: number;
}

/**
 * The primary's side as production has it: the PVM's disk with a write
 * hook (RawDiskBackend.onWrite), each write numbered 1, 2, ... as
 * DiskForwarder numbers them and handed over as a private copy. (The real
 * DiskForwarder, its stream records and checkpoints are run end to end in
 * src/colo/disk-forwarder.test.ts.)
 */
class ForwardingPvm {
  readonly disk: HookedDisk;
  lastSeq = 0;

  constructor(initial: Uint8Array, forward: (seq: number, offset: number, data: Uint8Array) => void) {
    this.disk = new HookedDisk(initial);
    this.disk.onWrite = (offset, data) => forward(++this.lastSeq, offset, Uint8Array.from(data));
  }

  write(offset: number, data: Uint8Array): void {
    this.disk.write(offset, data);
  }

  /** The secondary is lost: writes stay local. */
  stopForwarding(): void {
    this.disk.onWrite = undefined;
  }
}

/**
 * One randomized run of a primary and a secondary disk against plain arrays:
 *  - refPvm: the PVM's disk now (every PVM write);
 *  - refSvm: what the SVM must read (the PVM's disk at the last applied checkpoint, plus the SVM's writes);
 * PVM writes travel through an in-flight queue and are delivered in order, in random batches, so a
 * checkpoint can be taken on the primary (seq N, its image saved) while writes N+1.. are already on
 * the secondary when it applies checkpoint N.
 */
function runModel(seed: number, spillDir: string, memoryLimitBytes: number, ops: number): ModelRun {
  const rng = new Prng(seed);
  const size = 64 * 1024;
  const initial = rng.bytes(size);
  const secondaryBase = new MemoryDisk(initial);
  const inFlight: InFlight[] = [];
  const primary = new ForwardingPvm(initial, (seq, offset, data) => inFlight.push({ seq, offset, data }));
  const primaryLocal = primary.disk;
  const backlogLimitBytes = 16 * 1024;
  const secondary = new SecondaryDisk(secondaryBase, {
    spillDir,
    memoryLimitBytes,
    backlogLimitBytes,
    compactMinGarbageBytes: 4096,
  });
  secondary.checkpoint(0); // checkpoint 0: the images start identical (no initial sync needed)
  const refPvm = initial.slice();
  let refSvm: Uint8Array = initial.slice();
  /** Bytes the SVM wrote since the last checkpoint (for overlayBytes). */
  const svmDirty = new Uint8Array(size);
  /** Bytes of delivered, not yet applied PVM writes, by seq. */
  const deliveredBytes = new Map<number, number>();
  let taken: { seq: number; image: Uint8Array } | undefined;
  let failedOver = false;
  let checkpoints = 0;
  let checkpointsWithLaterWrites = 0;
  let incompleteRejected = 0;
  let overlayCompactions = 0;
  // Every third seed has long epochs (few checkpoints): big overlays, spill file compaction.
  const checkpointRate = seed % 3 === 0 ? 0.003 : 0.05;
  const where = (op: number) => `seed ${seed}, memory ${memoryLimitBytes}, op ${op}`;

  const deliver = (count: number) => {
    for (let i = 0; i < count; i++) {
      const w = inFlight.shift();
      if (w === undefined) return;
      secondary.primaryWrite(w.seq, w.offset, w.data);
      deliveredBytes.set(w.seq, w.data.length);
    }
  };
  const deliverUpTo = (seq: number) => {
    while (inFlight.length > 0 && (inFlight[0]?.seq ?? Infinity) <= seq) deliver(1);
  };

  for (let op = 0; op < ops; op++) {
    const r = rng.next();
    if (failedOver) {
      const { offset, length } = randomRange(rng, size);
      if (r < 0.5) {
        const data = rng.bytes(length);
        secondary.write(offset, data);
        refSvm.set(data, offset);
      } else {
        assert.deepEqual(secondary.read(offset, length), refSvm.slice(offset, offset + length), where(op));
      }
      continue;
    }
    if (r < 0.3) {
      const { offset, length } = randomRange(rng, size);
      const data = rng.bytes(length);
      primary.write(offset, data);
      refPvm.set(data, offset);
    } else if (r < 0.45) {
      deliver(1 + rng.int(6));
    } else if (r < 0.65) {
      const { offset, length } = randomRange(rng, size);
      const data = rng.bytes(length);
      secondary.write(offset, data);
      refSvm.set(data, offset);
      svmDirty.fill(1, offset, offset + length);
    } else if (r < 0.65 + checkpointRate) {
      // The primary pauses for a checkpoint: it records its lastSeq and its disk as of then.
      if (taken === undefined) taken = { seq: primary.lastSeq, image: refPvm.slice() };
    } else if (r < 0.65 + 2 * checkpointRate) {
      if (taken === undefined) continue;
      // The secondary applies it, possibly before every covered write arrived (rejected), possibly with later ones pending.
      if (secondary.lastSeq < taken.seq) {
        assert.throws(() => secondary.checkpoint(taken?.seq ?? 0), code("INCOMPLETE"), where(op));
        incompleteRejected++;
        deliverUpTo(taken.seq);
      }
      if (rng.chance(0.5)) deliver(rng.int(4));
      const pendingBefore = secondary.pendingWrites;
      const result = secondary.checkpoint(taken.seq);
      let expectedBytes = 0;
      for (const [seq, bytes] of deliveredBytes) {
        if (seq <= taken.seq) {
          expectedBytes += bytes;
          deliveredBytes.delete(seq);
        }
      }
      assert.equal(result.bytes, expectedBytes, where(op));
      assert.equal(secondary.pendingWrites, pendingBefore - result.applied, where(op));
      assert.equal(secondary.pendingWrites, deliveredBytes.size, where(op));
      assert.deepEqual(secondaryBase.bytes, taken.image, `${where(op)}: base is the PVM's disk at seq ${taken.seq}`);
      refSvm = taken.image;
      svmDirty.fill(0);
      taken = undefined;
      checkpoints++;
      if (secondary.pendingWrites > 0) checkpointsWithLaterWrites++;
      assert.deepEqual(secondary.read(0, size), refSvm, `${where(op)}: after checkpoint`);
    } else if (r < 0.985) {
      const { offset, length } = randomRange(rng, size);
      assert.deepEqual(secondary.read(offset, length), refSvm.slice(offset, offset + length), where(op));
    } else if (r < 0.9997) {
      // Invariants of the accounting, checked now and then.
      let pending = 0;
      for (const b of deliveredBytes.values()) pending += b;
      assert.equal(secondary.pendingBytes, pending, where(op));
      assert.equal(secondary.overlayBytes, countMarked(svmDirty), where(op));
      assert.equal(secondary.needsCheckpoint, pending + secondary.overlayBytes > backlogLimitBytes, where(op));
      const s = secondary.stats();
      assert.ok(s.memoryBytes <= memoryLimitBytes, where(op));
    } else {
      // The primary is lost: the secondary takes over with whatever arrived.
      deliver(rng.int(inFlight.length + 1));
      const pendingBefore = secondary.pendingWrites;
      overlayCompactions = secondary.stats().overlayCompactions;
      const result = secondary.failover();
      assert.equal(result.dropped, pendingBefore, where(op));
      assert.equal(result.committedBytes, countMarked(svmDirty), where(op));
      assert.deepEqual(secondaryBase.bytes, refSvm, `${where(op)}: the SVM's view was committed`);
      primary.stopForwarding();
      failedOver = true;
    }
  }

  assert.deepEqual(secondary.read(0, size), refSvm, `seed ${seed}: final SVM view`);
  assert.deepEqual(primaryLocal.bytes, refPvm, `seed ${seed}: the PVM's own disk`);
  if (failedOver) {
    assert.deepEqual(secondaryBase.bytes, refSvm);
  } else {
    // A last checkpoint brings the secondary to the PVM's disk exactly.
    deliver(inFlight.length);
    secondary.checkpoint(primary.lastSeq);
    assert.deepEqual(secondaryBase.bytes, refPvm, `seed ${seed}: final checkpoint`);
    assert.equal(secondary.pendingBytes + secondary.overlayBytes, 0);
  }
  const { spilledBytes } = secondary.stats();
  if (!failedOver) overlayCompactions = secondary.stats().overlayCompactions;
  secondary.close();
  return {
    finalView: secondaryBase.bytes.slice(),
    checkpoints,
    failedOver,
    spilledBytes,
    checkpointsWithLaterWrites,
    incompleteRejected,
    overlayCompactions,
  };
}

test("secondary disk: randomized model test against plain arrays, in memory and spilling (many seeds)", (t) => {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  let failovers = 0;
  let checkpoints = 0;
  let spillingRuns = 0;
  let withLaterWrites = 0;
  let incomplete = 0;
  let compactions = 0;
  for (let seed = 1; seed <= 30; seed++) {
    const inMemory = runModel(seed, spill.dir, 64 * 2 ** 20, 3000);
    assert.equal(inMemory.spilledBytes, 0, `seed ${seed}: nothing spilled with 64 MiB`);
    for (const limit of [0, 4096]) {
      const spilling = runModel(seed, spill.dir, limit, 3000);
      if (spilling.spilledBytes > 0) spillingRuns++;
      compactions += spilling.overlayCompactions;
      assert.deepEqual(spilling.finalView, inMemory.finalView, `seed ${seed}, limit ${limit}: same result as in memory`);
      assert.equal(spilling.checkpoints, inMemory.checkpoints);
    }
    if (inMemory.failedOver) failovers++;
    checkpoints += inMemory.checkpoints;
    withLaterWrites += inMemory.checkpointsWithLaterWrites;
    incomplete += inMemory.incompleteRejected;
  }
  t.diagnostic(
    `checkpoints ${checkpoints}, with later writes pending ${withLaterWrites}, rejected as incomplete ${incomplete}, ` +
      `failovers ${failovers}/30, spilling runs ${spillingRuns}/60, compactions ${compactions}`,
  );
  assert.ok(withLaterWrites >= 100, `checkpoints applied with later writes pending: ${withLaterWrites}`);
  assert.ok(incomplete >= 50, `checkpoints rejected as incomplete: ${incomplete}`);
  assert.ok(compactions >= 1, `overlay spill files compacted: ${compactions}`);
  assert.ok(spillingRuns >= 50, `the small limits made the runs spill (${spillingRuns} of 60)`);
  assert.ok(failovers >= 5 && failovers <= 25, `some runs fail over, some do not (${failovers} of 30)`);
  assert.ok(checkpoints >= 500, `the runs cover checkpoints (${checkpoints})`);
  assert.deepEqual(spill.entries(), [], "spill files leave no names behind");
});

test("secondary disk: the SVM reads its own writes over the base; the base is never written by the SVM", (t) => {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const base = new MemoryDisk(fill(7, 4096));
  const disk = new SecondaryDisk(base, { spillDir: spill.dir });
  assert.equal(disk.byteLength, 4096);
  disk.write(100, fill(1, 10));
  assert.deepEqual(disk.read(95, 20), Uint8Array.from([...fill(7, 5), ...fill(1, 10), ...fill(7, 5)]));
  assert.deepEqual(base.bytes, fill(7, 4096));
  disk.primaryWrite(1, 100, fill(2, 10));
  assert.deepEqual(disk.read(100, 10), fill(1, 10), "pending PVM writes are invisible to the SVM");
  assert.deepEqual(disk.checkpoint(1), { applied: 1, bytes: 10 });
  assert.deepEqual(disk.read(100, 10), fill(2, 10), "after the checkpoint the SVM sees the PVM's disk");
  assert.equal(disk.overlayBytes, 0);
  assert.throws(() => disk.read(4090, 10), code("RANGE"));
  assert.throws(() => disk.write(-512, fill(0, 512)), code("RANGE"));
  assert.throws(() => disk.primaryWrite(2, 4095, fill(0, 2)), code("RANGE"));
  disk.close();
});

test("secondary disk: forwarded writes must arrive in seq order", (t) => {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const disk = new SecondaryDisk(new MemoryDisk(4096), { spillDir: spill.dir });
  assert.throws(() => disk.primaryWrite(2, 0, fill(1, 512)), /expected seq 1, got 2/);
  disk.primaryWrite(1, 0, fill(1, 512));
  assert.throws(() => disk.primaryWrite(1, 0, fill(1, 512)), /expected seq 2, got 1/, "a duplicate is rejected");
  assert.throws(() => disk.primaryWrite(3, 0, fill(1, 512)), code("SEQUENCE"));
  assert.equal(disk.lastSeq, 1);
  assert.equal(disk.pendingWrites, 1);
  disk.close();
});

test("secondary disk: a checkpoint needs every covered write and may not go back", (t) => {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const base = new MemoryDisk(4096);
  const disk = new SecondaryDisk(base, { spillDir: spill.dir });
  disk.primaryWrite(1, 0, fill(1, 512));
  disk.primaryWrite(2, 512, fill(2, 512));
  assert.throws(() => disk.checkpoint(3), /up to seq 3 but only up to seq 2 arrived/);
  assert.deepEqual(base.bytes, new Uint8Array(4096), "a rejected checkpoint applies nothing");
  assert.equal(disk.pendingWrites, 2);
  disk.checkpoint(2);
  assert.throws(() => disk.checkpoint(1), code("SEQUENCE"));
  assert.deepEqual(disk.checkpoint(2), { applied: 0, bytes: 0 }, "a checkpoint with no new PVM writes");
  assert.equal(disk.stats().checkpoints, 2);
  disk.close();
});

test("secondary disk: writes after the checkpoint's seq stay pending, in order, and overwrite earlier ones only when applied", (t) => {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  for (const memoryLimitBytes of [64 * 2 ** 20, 0]) {
    const base = new MemoryDisk(4096);
    const disk = new SecondaryDisk(base, { spillDir: spill.dir, memoryLimitBytes });
    disk.primaryWrite(1, 0, fill(1, 1024));
    disk.primaryWrite(2, 512, fill(2, 1024)); // overlaps seq 1
    disk.primaryWrite(3, 0, fill(3, 256)); // arrived, but after the checkpoint below
    disk.primaryWrite(4, 1000, fill(4, 100));
    assert.deepEqual(disk.checkpoint(2), { applied: 2, bytes: 2048 });
    const atSeq2 = new Uint8Array(4096);
    atSeq2.fill(1, 0, 512);
    atSeq2.fill(2, 512, 1536);
    assert.deepEqual(base.bytes, atSeq2, `memory ${memoryLimitBytes}: seq 3 not applied`);
    assert.deepEqual([disk.pendingWrites, disk.pendingBytes, disk.lastSeq, disk.checkpointSeq], [2, 356, 4, 2]);
    disk.primaryWrite(5, 0, fill(5, 128));
    assert.deepEqual(disk.checkpoint(5), { applied: 3, bytes: 484 });
    const atSeq5 = atSeq2.slice();
    atSeq5.fill(3, 0, 256);
    atSeq5.fill(4, 1000, 1100);
    atSeq5.fill(5, 0, 128);
    assert.deepEqual(base.bytes, atSeq5);
    assert.equal(disk.pendingBytes, 0);
    if (memoryLimitBytes === 0) assert.equal(disk.stats().spillFileBytes, 0, "spill files truncated when nothing is pending");
    disk.close();
  }
});

test("secondary disk: failover commits the SVM's writes, drops pending PVM writes, then passes through", (t) => {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const base = new MemoryDisk(4096);
  const disk = new SecondaryDisk(base, { spillDir: spill.dir });
  assert.throws(() => disk.failover(), /failover before the first checkpoint/);
  disk.checkpoint(0);
  disk.write(0, fill(1, 512));
  disk.write(1024, fill(2, 100));
  disk.write(1050, fill(3, 10));
  disk.primaryWrite(1, 0, fill(9, 4096));
  disk.primaryWrite(2, 0, fill(9, 10));
  assert.deepEqual(disk.failover(), { committed: 4, committedBytes: 612, dropped: 2, droppedBytes: 4106 });
  const expected = new Uint8Array(4096);
  expected.fill(1, 0, 512);
  expected.fill(2, 1024, 1124);
  expected.fill(3, 1050, 1060);
  assert.deepEqual(base.bytes, expected);
  assert.equal(disk.mode, "failed-over");
  disk.write(2048, fill(4, 10));
  assert.deepEqual(base.bytes.slice(2048, 2058), fill(4, 10), "writes now go straight to the base");
  assert.deepEqual(disk.read(2040, 20), base.bytes.slice(2040, 2060));
  assert.throws(() => disk.primaryWrite(3, 0, fill(0, 1)), code("STATE"));
  assert.throws(() => disk.checkpoint(2), code("STATE"));
  assert.throws(() => disk.failover(), code("STATE"));
  assert.equal(disk.needsCheckpoint, false);
  disk.close();
  assert.throws(() => disk.read(0, 1), code("STATE"));
});

test("secondary disk: needsCheckpoint turns true past the backlog limit (pending + overlay bytes)", (t) => {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const disk = new SecondaryDisk(new MemoryDisk(8192), { spillDir: spill.dir, backlogLimitBytes: 1000 });
  disk.primaryWrite(1, 0, fill(1, 600));
  disk.write(0, fill(2, 400));
  assert.equal(disk.needsCheckpoint, false, "exactly at the limit");
  disk.write(0, fill(2, 400)); // the same bytes again: the overlay does not grow
  assert.equal(disk.needsCheckpoint, false);
  disk.primaryWrite(2, 0, fill(1, 1)); // the log does: each forwarded write counts
  assert.equal(disk.needsCheckpoint, true);
  disk.checkpoint(2);
  assert.equal(disk.needsCheckpoint, false);
  assert.equal(disk.stats().discardedOverlayBytes, 400);
  disk.close();
});

test("secondary disk: onBacklog is called once when the backlog passes its limit, by SVM or PVM writes, and again only after a checkpoint", (t) => {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  let calls = 0;
  const disk = new SecondaryDisk(new MemoryDisk(8192), { spillDir: spill.dir, backlogLimitBytes: 1000, onBacklog: () => calls++ });
  disk.write(0, fill(1, 1000));
  assert.equal(calls, 0, "at the limit, not past it");
  disk.write(1000, fill(1, 1)); // the SVM's overlay passes it
  assert.equal(calls, 1);
  assert.equal(disk.needsCheckpoint, true);
  disk.write(2000, fill(1, 500));
  disk.primaryWrite(1, 0, fill(2, 100));
  assert.equal(calls, 1, "once until a checkpoint");
  disk.checkpoint(1);
  assert.equal(disk.needsCheckpoint, false);
  disk.primaryWrite(2, 0, fill(3, 1001)); // now the PVM's pending writes pass it
  assert.equal(calls, 2);
  assert.equal(disk.stats().backlogReports, 2);
  disk.checkpoint(2);
  disk.failover();
  disk.write(0, fill(4, 4096));
  disk.write(4096, fill(4, 4096));
  assert.equal(calls, 2, "after failover there is no backlog");
  disk.close();
});

test("secondary disk: initial sync writes to the base; writes forwarded during the copy win at the first checkpoint", (t) => {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const rng = new Prng(42);
  const size = 8 * 4096;
  const chunk = 4096;
  const svmBase = new MemoryDisk(size);
  const disk = new SecondaryDisk(svmBase, { spillDir: spill.dir });
  // Forwarding starts before the copy; the PVM keeps writing while chunks are read.
  const primary = new ForwardingPvm(rng.bytes(size), (seq, offset, data) => disk.primaryWrite(seq, offset, data));
  const pvmLocal = primary.disk;
  for (let offset = 0; offset < size; offset += chunk) {
    const copied = pvmLocal.read(offset, chunk);
    for (let i = 0; i < 3; i++) {
      const { offset: o, length } = randomRange(rng, size);
      primary.write(o, rng.bytes(length)); // before or after this chunk: either way
    }
    disk.syncWrite(offset, copied);
  }
  disk.checkpoint(primary.lastSeq); // checkpoint 0 ends the sync
  assert.deepEqual(svmBase.bytes, pvmLocal.bytes);
  assert.equal(disk.stats().syncBytes, size);
  assert.throws(() => disk.syncWrite(0, fill(0, 512)), code("STATE"));
  disk.close();
});

test("secondary disk: a base that fails mid-checkpoint leaves the disk broken, not half-usable", (t) => {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const base = new MemoryDisk(4096);
  const disk = new SecondaryDisk(base, { spillDir: spill.dir });
  disk.primaryWrite(1, 0, fill(1, 512));
  base.failNextWrite = new Error("EIO");
  assert.throws(() => disk.checkpoint(1), /applying primary writes at a checkpoint: EIO/);
  assert.equal(disk.mode, "broken");
  assert.throws(() => disk.read(0, 512), /broken by an earlier failure \(EIO\)/);
  disk.close();
  assert.equal(disk.mode, "closed");
});

test("secondary disk: an unusable spill directory is reported with its path", (t) => {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const missing = `${spill.dir}/missing`;
  const disk = new SecondaryDisk(new MemoryDisk(4096), { spillDir: missing, memoryLimitBytes: 0 });
  assert.throws(
    () => disk.write(0, fill(1, 512)),
    (e: unknown) => e instanceof DiskReplicationError && e.code === "SPILL" && e.message.includes(missing),
  );
  assert.equal(disk.overlayBytes, 0, "the failed write left nothing behind");
  disk.close();
});
