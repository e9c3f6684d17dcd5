import { test } from "node:test";
import assert from "node:assert/strict";
import { ShadowDirtyTracker } from "./dirty-tracker.js";
import { PAGE_SIZE } from "./engine.js";

test("tracker: a page copied with intermediate bytes and then written back is reported (no ABA miss)", () => {
  const ram = new Uint8Array(8 * PAGE_SIZE);
  const t = new ShadowDirtyTracker(ram.length);
  ram[3 * PAGE_SIZE] = 1;
  assert.deepEqual(Array.from(t.take(ram)), [3]);
  // The guest writes page 3 (B), a transfer copies it, the guest writes A back.
  ram[3 * PAGE_SIZE] = 2;
  t.copied(ram, [3]);
  ram[3 * PAGE_SIZE] = 1;
  assert.deepEqual(Array.from(t.take(ram)), [3], "the copy holds 2, RAM holds 1: dirty");
  assert.deepEqual(Array.from(t.take(ram)), []);
});

test("tracker: the copy takes the bytes that were sent; a write between the transfer's copy and copied() stays dirty", () => {
  const ram = new Uint8Array(4 * PAGE_SIZE);
  const t = new ShadowDirtyTracker(ram.length);
  ram[2 * PAGE_SIZE] = 1;
  assert.deepEqual(Array.from(t.take(ram)), [2]);
  // A transfer copies page 2 (holding 1) to send it; a vCPU in another thread writes 5 before copied() runs.
  const sent = ram.slice(2 * PAGE_SIZE, 3 * PAGE_SIZE);
  ram[2 * PAGE_SIZE] = 5;
  t.copied(ram, [2], sent);
  assert.deepEqual(Array.from(t.take(ram)), [2], "what was sent holds 1, RAM holds 5: dirty");
  assert.deepEqual(Array.from(t.take(ram)), []);
  assert.throws(() => t.copied(ram, [1, 2], sent), /4096 bytes sent for 2 pages/);
});

test("tracker: copied pages are clean until written again; bounds checked", () => {
  const ram = new Uint8Array(4 * PAGE_SIZE);
  const t = new ShadowDirtyTracker(ram.length);
  ram[0] = 9;
  ram[PAGE_SIZE] = 9;
  t.copied(ram, [0, 1]);
  assert.deepEqual(Array.from(t.take(ram)), []);
  ram[PAGE_SIZE + 5] = 1;
  assert.deepEqual(Array.from(t.take(ram)), [1]);
  assert.throws(() => t.copied(ram, [4]), /outside guest RAM/);
  assert.throws(() => new ShadowDirtyTracker(1000), /multiple of the page size/);
});

test("tracker: block-wise compare reports exactly the changed and forced pages (random writes, partial last block)", () => {
  const pages = 16 * 5 + 7; // not a whole number of 16-page blocks
  const ram = new Uint8Array(pages * PAGE_SIZE);
  const t = new ShadowDirtyTracker(ram.length);
  let reference = Uint8Array.from(ram);
  let seed = 12345;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed % n;
  };
  for (let round = 0; round < 200; round++) {
    for (let i = 0; i < rand(20); i++) ram[rand(pages) * PAGE_SIZE + rand(PAGE_SIZE)] = rand(256);
    const forced = new Set<number>();
    for (let i = 0; i < rand(3); i++) forced.add(rand(pages));
    for (const pfn of forced) t.markDirty(pfn);
    const want: number[] = [];
    for (let pfn = 0; pfn < pages; pfn++) {
      const a = ram.subarray(pfn * PAGE_SIZE, (pfn + 1) * PAGE_SIZE);
      const b = reference.subarray(pfn * PAGE_SIZE, (pfn + 1) * PAGE_SIZE);
      if (forced.has(pfn) || !Buffer.from(a).equals(Buffer.from(b))) want.push(pfn);
    }
    assert.deepEqual(Array.from(t.take(ram)), want, `round ${round}`);
    assert.deepEqual(Array.from(t.take(ram)), [], "everything reported once");
    reference = Uint8Array.from(ram);
  }
});
