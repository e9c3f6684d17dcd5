import { test } from "node:test";
import assert from "node:assert/strict";
import { ExtentMap } from "./extent-map.js";
import { DiskReplicationError } from "./errors.js";
import { MemoryBudget } from "./spill-store.js";
import { countMarked, makeSpillDir, Prng, randomRange } from "./testing.js";

const fill = (n: number, len: number) => new Uint8Array(len).fill(n);

/** An underlying device of `size` bytes where byte i reads as (i * 7 + 3) & 0xff; counts its reads. */
function patterned(size: number): { bytes: Uint8Array; reads: Array<[number, number]>; read: (o: number, l: number) => Uint8Array } {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 7 + 3) & 0xff;
  const reads: Array<[number, number]> = [];
  return { bytes, reads, read: (o, l) => (reads.push([o, l]), bytes.slice(o, o + l)) };
}

/** Extents sorted, non-overlapping, non-empty; storedBytes is their total. */
function assertWellFormed(map: ExtentMap): void {
  let prevEnd = -1;
  let total = 0;
  for (const { offset, length } of map.ranges()) {
    assert.ok(length > 0, "empty extent");
    assert.ok(offset >= prevEnd, `extent at ${offset} overlaps the previous one ending at ${prevEnd}`);
    prevEnd = offset + length;
    total += length;
  }
  assert.equal(map.storedBytes, total);
}

test("extent map: newest write wins; overlapping and unaligned writes split existing extents", (t) => {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const map = new ExtentMap({ spillDir: spill.dir });
  const under = patterned(100);
  map.write(10, fill(1, 20)); // [10,30)
  map.write(20, fill(2, 5)); // splits: [10,20) [20,25) [25,30)
  map.write(28, fill(3, 4)); // cuts the tail: [25,28), new [28,32)
  map.write(5, fill(4, 7)); // cuts the head: [5,12), [12,20)
  assert.deepEqual([...map.ranges()], [
    { offset: 5, length: 7 },
    { offset: 12, length: 8 },
    { offset: 20, length: 5 },
    { offset: 25, length: 3 },
    { offset: 28, length: 4 },
  ]);
  assert.equal(map.storedBytes, 27);
  const expected = under.bytes.slice(0, 40);
  expected.fill(1, 10, 30);
  expected.fill(2, 20, 25);
  expected.fill(3, 28, 32);
  expected.fill(4, 5, 12);
  assert.deepEqual(map.read(0, 40, under.read), expected);
  assert.deepEqual(under.reads, [[0, 5], [32, 8]], "the device is asked only for the gaps");
  map.write(0, fill(9, 50)); // swallows everything
  assert.deepEqual([...map.ranges()], [{ offset: 0, length: 50 }]);
  assert.deepEqual(
    [...map.entries()].map((e) => [e.offset, e.data.length, e.data[0]]),
    [[0, 50, 9]],
  );
  under.reads.length = 0;
  assert.deepEqual(map.read(10, 10, under.read), fill(9, 10));
  assert.deepEqual(under.reads, [], "a fully covered read does not touch the device");
  map.clear();
  assert.equal(map.storedBytes, 0);
  assert.deepEqual(map.read(0, 10, under.read), under.bytes.slice(0, 10));
  map.close();
});

test("extent map: the caller's buffer is copied, not kept", (t) => {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const map = new ExtentMap({ spillDir: spill.dir });
  const data = fill(5, 8);
  map.write(0, data);
  data.fill(6);
  assert.deepEqual(map.read(0, 8, () => new Uint8Array(0)), fill(5, 8));
  map.close();
});

test("extent map: bad ranges, short underlying reads, and changes during iteration are errors", (t) => {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const map = new ExtentMap({ spillDir: spill.dir, label: "t" });
  assert.throws(() => map.write(-1, fill(0, 1)), (e: unknown) => e instanceof DiskReplicationError && e.code === "RANGE");
  assert.throws(() => map.read(0.5, 1, () => new Uint8Array(1)), (e: unknown) => e instanceof DiskReplicationError && e.code === "RANGE");
  assert.throws(() => map.read(0, 4, () => new Uint8Array(3)), (e: unknown) => e instanceof DiskReplicationError && e.code === "UNDERLYING");
  map.write(0, fill(1, 4));
  map.write(10, fill(1, 4));
  assert.throws(() => {
    for (const e of map.entries()) map.write(e.offset + 20, e.data);
  }, (e: unknown) => e instanceof DiskReplicationError && e.code === "STATE");
  map.write(3, new Uint8Array(0)); // empty write: nothing changes
  assert.equal(map.extentCount, 3);
  map.close();
});

test("extent map: past the memory limit data spills to an unlinked file; clear truncates it", (t) => {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const budget = new MemoryBudget(1000);
  const map = new ExtentMap({ spillDir: spill.dir, budget });
  map.write(0, fill(1, 600));
  map.write(1000, fill(2, 600)); // does not fit: spilled
  assert.equal(budget.used, 600);
  let s = map.stats();
  assert.equal(s.memoryBytes, 600);
  assert.equal(s.fileBytes, 600);
  assert.equal(s.liveFileBytes, 600);
  assert.deepEqual(spill.entries(), [], "the spill file has no name");
  // A write over the memory extent frees its memory first, so it fits in memory again.
  map.write(0, fill(3, 600));
  assert.equal(map.stats().memoryBytes, 600);
  // Cutting a spilled extent keeps file positions (no new file bytes); the new 100 bytes fit in memory.
  map.write(1200, fill(4, 100));
  s = map.stats();
  assert.deepEqual([s.fileBytes, s.liveFileBytes, s.memoryBytes], [600, 500, 700]);
  const expected = new Uint8Array(1600);
  expected.fill(3, 0, 600);
  expected.fill(2, 1000, 1600);
  expected.fill(4, 1200, 1300);
  assert.deepEqual(map.read(0, 1600, (_o, l) => new Uint8Array(l)), expected);
  map.clear();
  s = map.stats();
  assert.deepEqual([s.memoryBytes, s.fileBytes, s.liveFileBytes, budget.used], [0, 0, 0, 0]);
  map.close();
  assert.deepEqual(spill.entries(), []);
});

test("extent map: spill file garbage is compacted once it outweighs the live bytes", (t) => {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const map = new ExtentMap({ spillDir: spill.dir, memoryLimitBytes: 0, compactMinGarbageBytes: 4096 });
  for (let round = 0; round < 50; round++) {
    for (let i = 0; i < 4; i++) map.write(i * 512, fill(round, 512));
  }
  const s = map.stats();
  assert.ok(s.compactions > 0, "compacted");
  assert.equal(s.liveFileBytes, 2048);
  assert.ok(s.fileBytes <= 2 * 2048 + 4096 + 512, `spill file ${s.fileBytes} bytes stays bounded`);
  assert.deepEqual(map.read(0, 2048, (_o, l) => new Uint8Array(l)), fill(49, 2048));
  map.close();
});

/** Random writes and reads against a plain array, with memory limits from "everything in memory" to "everything spilled". */
test("extent map: randomized model test (many seeds, memory limits 0 / 2 KiB / 64 MiB)", (t) => {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const size = 32 * 1024;
  for (const memoryLimitBytes of [0, 2048, 64 * 2 ** 20]) {
    for (let seed = 1; seed <= 20; seed++) {
      const rng = new Prng(seed);
      const under = patterned(size);
      const model = under.bytes.slice();
      const covered = new Uint8Array(size);
      const map = new ExtentMap({ spillDir: spill.dir, memoryLimitBytes, compactMinGarbageBytes: 8192 });
      for (let op = 0; op < 2000; op++) {
        const { offset, length } = randomRange(rng, size);
        const r = rng.next();
        if (r < 0.5) {
          const data = rng.bytes(length);
          map.write(offset, data);
          model.set(data, offset);
          covered.fill(1, offset, offset + length);
        } else if (r < 0.98) {
          assert.deepEqual(map.read(offset, length, under.read), model.slice(offset, offset + length), `seed ${seed} op ${op}`);
        } else {
          map.clear();
          model.set(under.bytes);
          covered.fill(0);
        }
        if (op % 250 === 0) assertWellFormed(map);
      }
      assertWellFormed(map);
      assert.equal(map.storedBytes, countMarked(covered), `seed ${seed}: stored bytes`);
      assert.deepEqual(map.read(0, size, under.read), model, `seed ${seed}: whole device`);
      for (const { offset, data } of map.entries()) assert.deepEqual(data, model.slice(offset, offset + data.length));
      const s = map.stats();
      assert.ok(s.memoryBytes <= memoryLimitBytes);
      if (memoryLimitBytes === 0) assert.equal(s.memoryBytes, 0);
      map.close();
    }
  }
  assert.deepEqual(spill.entries(), []);
});

/** Thousands of tiny extents (many index blocks), cut by big writes spanning blocks: the two-level index against the model. */
test("extent map: randomized model test with thousands of tiny extents and block-spanning writes", (t) => {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const size = 256 * 1024;
  let maxBlocks = 0;
  let maxExtents = 0;
  for (let seed = 100; seed < 106; seed++) {
    const rng = new Prng(seed);
    const under = patterned(size);
    const model = under.bytes.slice();
    const covered = new Uint8Array(size);
    const map = new ExtentMap({ spillDir: spill.dir, memoryLimitBytes: seed % 2 === 0 ? 64 * 2 ** 20 : 16 * 1024 });
    for (let op = 0; op < 12000; op++) {
      const r = rng.next();
      const big = rng.chance(0.01);
      // Tiny writes on even offsets leave gaps; a few big ones swallow hundreds of extents across blocks.
      const offset = big ? rng.int(size) : rng.int(size / 16) * 16;
      const length = Math.min(big ? 1 + rng.int(32 * 1024) : 1 + rng.int(12), size - offset);
      if (r < 0.7) {
        const data = rng.bytes(length);
        map.write(offset, data);
        model.set(data, offset);
        covered.fill(1, offset, offset + length);
      } else {
        const readLength = Math.min(1 + rng.int(8192), size - offset);
        assert.deepEqual(map.read(offset, readLength, under.read), model.slice(offset, offset + readLength), `seed ${seed} op ${op}`);
      }
      if (op % 1000 === 0) assertWellFormed(map);
      const s = map.stats();
      maxBlocks = Math.max(maxBlocks, s.blocks);
      maxExtents = Math.max(maxExtents, s.extents);
    }
    assertWellFormed(map);
    assert.equal(map.extentCount, [...map.ranges()].length);
    assert.equal(map.storedBytes, countMarked(covered));
    assert.deepEqual(map.read(0, size, under.read), model, `seed ${seed}: whole device`);
    map.close();
  }
  t.diagnostic(`up to ${maxExtents} extents in ${maxBlocks} blocks`);
  assert.ok(maxBlocks >= 10, "the index had many blocks");
});
