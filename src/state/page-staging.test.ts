import assert from "node:assert/strict";
import { test } from "node:test";
import { PAGE_SIZE } from "../engine/engine.js";
import { applyPageData } from "./page-data.js";
import { bufferAddress } from "../sys/index.js";
import { PageStaging } from "./page-staging.js";
import { readAll } from "./reader.js";
import type { StreamRecord } from "./records.js";
import { MemorySink } from "./sink.js";
import { emuMachine, emuState, sampleRam, seededRandom } from "./testing.js";
import { stagePages, writeStagedPages } from "./write-pages.js";
import { StreamWriter } from "./writer.js";

/** A save-shaped stream of what `staged` holds (the pages' records between MEMORY_STREAM and END). */
async function streamOf(pages: number, stage: (writer: StreamWriter) => Promise<void>): Promise<StreamRecord[]> {
  const sink = new MemorySink();
  const writer = new StreamWriter(sink, { machine: emuMachine(pages) });
  await writer.writeMemoryStream();
  await stage(writer);
  await writer.writeEngineState(emuState(new Uint8Array(8)));
  await writer.writeMemoryEnd();
  await writer.writeEnd();
  return readAll(sink.bytes(), { expect: { engineId: "emu", memoryBytes: pages * PAGE_SIZE, vcpuCount: 1 }, requireEndOfSource: true });
}

/** RAM rebuilt from the page records over `base`. */
function applied(records: StreamRecord[], base: Uint8Array): Uint8Array {
  const ram = base.slice();
  for (const r of records) if (r.kind === "page-data") applyPageData(r.pages, ram);
  return ram;
}

test("staged pages: the records carry RAM as it was when staged, through reused buffers, checkpoint after checkpoint", async () => {
  const pages = 3000;
  const ram = sampleRam(seededRandom(7), pages, 0.3);
  const staging = new PageStaging({ maxBatches: 2, prepare: 0 });
  // The whole of RAM each time (a save's first memory part is a whole image): batches of 1024, 1024, 952 -- 2 reused, 1 fresh.
  const pfns = Array.from({ length: pages }, (_, i) => i);
  const machine = emuMachine(pages);
  const buffersSeen: ArrayBufferLike[][] = [];
  for (let round = 0; round < 3; round++) {
    const expected = ram.slice();
    const staged = stagePages({ memoryBytes: machine.memoryBytes, pageCount: pages }, ram, pfns, undefined, staging);
    buffersSeen.push(staged.batches.map((b) => b.sent.buffer));
    // The guest runs on before the records are written: what it writes now belongs to the next checkpoint.
    for (const pfn of pfns) ram[pfn * PAGE_SIZE + 5] = (round + 1) * 17 + (pfn % 7);
    const records = await streamOf(pages, async (w) => {
      const stats = await writeStagedPages(w, staged);
      assert.equal(stats.pages, pfns.length);
    });
    const rebuilt = applied(records, new Uint8Array(ram.length));
    assert.deepEqual(rebuilt, expected, `round ${round}`);
  }
  // The first two batches land in the same two buffers every round; the third (past maxBatches) is new each time.
  assert.equal(buffersSeen[1]?.[0], buffersSeen[0]?.[0]);
  assert.equal(buffersSeen[2]?.[1], buffersSeen[0]?.[1]);
  assert.notEqual(buffersSeen[1]?.[2], buffersSeen[0]?.[2]);
  assert.equal(staging.bytes, 2 * (1024 * PAGE_SIZE + 4096));
});

test("staging: a second checkpoint staged before the first is written gets its own buffers; a failed stage gives its lease back", () => {
  const pages = 64;
  const ram = sampleRam(seededRandom(9), pages, 0);
  const before = ram.slice();
  const machine = { memoryBytes: pages * PAGE_SIZE, pageCount: pages };
  const staging = new PageStaging({ maxBatches: 1, prepare: 1 });
  const first = stagePages(machine, ram, [1, 2, 3], undefined, staging);
  const second = stagePages(machine, ram, [4, 5], undefined, staging);
  assert.notEqual(second.batches[0]?.sent.buffer, first.batches[0]?.sent.buffer);
  ram.fill(0xee, 1 * PAGE_SIZE, 6 * PAGE_SIZE);
  // Neither copy moved: the first's bytes are not the second's, and RAM's change is in neither.
  assert.deepEqual(first.batches[0]?.sent, before.subarray(1 * PAGE_SIZE, 4 * PAGE_SIZE));
  assert.deepEqual(second.batches[0]?.sent, before.subarray(4 * PAGE_SIZE, 6 * PAGE_SIZE));
  first.lease?.release();
  second.lease?.release();
  // A pfn outside RAM fails the stage and releases its lease: the next stage reuses the kept buffer.
  assert.throws(() => stagePages(machine, ram, [0, pages], undefined, staging), /outside guest memory/);
  const third = stagePages(machine, ram, [7], undefined, staging);
  assert.equal(third.batches[0]?.sent.buffer, first.batches[0]?.sent.buffer);
  third.lease?.release();
  assert.throws(() => third.lease?.buffer(0, 1), /after release/, "a lease is not used once released");
});

test("staging with addressOf: every batch's copy starts at guest RAM's offset within a 4 KiB page", () => {
  for (const skew of [0, 16, 100, 4000]) {
    const backing = new Uint8Array(64 * PAGE_SIZE + 4096);
    const ram = backing.subarray(skew, skew + 64 * PAGE_SIZE);
    const staging = new PageStaging({ maxBatches: 1, addressOf: bufferAddress });
    const staged = stagePages({ memoryBytes: ram.length, pageCount: 64 }, ram, [3, 9], undefined, staging);
    const copy = staged.batches[0]?.sent;
    assert.ok(copy);
    assert.equal((bufferAddress(copy) - bufferAddress(ram)) % 4096n, 0n, `RAM ${skew} bytes into its buffer`);
    staged.lease?.release();
    // A second stage while the first holds the buffers (fresh ones) too.
    const many = stagePages({ memoryBytes: ram.length, pageCount: 64 }, ram, [1], undefined, staging);
    const busy = stagePages({ memoryBytes: ram.length, pageCount: 64 }, ram, [2], undefined, staging);
    assert.equal((bufferAddress(busy.batches[0]?.sent ?? new Uint8Array(0)) - bufferAddress(ram)) % 4096n, 0n);
    many.lease?.release();
  }
});

test("staging with addressOf: a batch past maxBatches (a fresh buffer each time) is aligned as well", () => {
  const pages = 1100;
  const backing = new Uint8Array(pages * PAGE_SIZE + 4096);
  const ram = backing.subarray(48, 48 + pages * PAGE_SIZE);
  const staging = new PageStaging({ maxBatches: 1, addressOf: bufferAddress });
  const staged = stagePages({ memoryBytes: ram.length, pageCount: pages }, ram, Array.from({ length: pages }, (_, i) => i), undefined, staging);
  assert.equal(staged.batches.length, 2);
  for (const b of staged.batches) assert.equal((bufferAddress(b.sent) - bufferAddress(ram)) % 4096n, 0n);
  assert.deepEqual(staged.batches[1]?.sent, ram.subarray(1024 * PAGE_SIZE));
  staged.lease?.release();
});
