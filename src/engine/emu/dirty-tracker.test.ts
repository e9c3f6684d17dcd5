import { test } from "node:test";
import assert from "node:assert/strict";
import { ShadowDirtyTracker } from "./dirty-tracker.js";
import { PAGE_SIZE } from "../engine.js";

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
