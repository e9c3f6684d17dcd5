/**
 * The dirty-rate sampler over a RAM buffer that a timer writes to during
 * the window (a guest that runs on): it counts exactly the pages written,
 * scales a sample when RAM exceeds its budget, and never takes a long turn
 * of the event loop.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { sampleDirtyRate } from "./dirty-rate.js";
import { PAGE_SIZE } from "./engine.js";

const MIB = 2 ** 20;

/**
 * A RAM accessor that writes to `pages` (one octet each, changed) 10 ms
 * after the sampler's copy pass asked for its last view (`copySlices`
 * views: one per 1 MiB slice), so the writes fall in the window whatever
 * the machine's load; `again` are written a second time 20 ms later.
 */
function guestWriting(ram: Uint8Array, copySlices: number, pages: number[], again: number[] = []): () => Uint8Array {
  let calls = 0;
  const bump = (list: number[]) => {
    for (const p of list) ram[p * PAGE_SIZE + 100] = ((ram[p * PAGE_SIZE + 100] ?? 0) + 1) & 0xff;
  };
  return () => {
    if (++calls === copySlices) {
      setTimeout(() => bump(pages), 10);
      setTimeout(() => bump(again), 30);
    }
    return ram;
  };
}

test("dirty rate: every page written in the window is counted once, the rest not; the rate is pages over the window", async () => {
  const ram = new Uint8Array(16 * MIB);
  ram.fill(7);
  const pages = [0, 1, 17, 255, 1000, 4095];
  // The same pages again: still one each.
  const s = await sampleDirtyRate(guestWriting(ram, 16, pages, [17, 1000]), ram.length, { windowMs: 200 });
  assert.equal(s.exact, true);
  assert.equal(s.pages, 4096);
  assert.equal(s.sampledPages, 4096);
  assert.equal(s.dirtySampledPages, pages.length);
  assert.equal(s.dirtyPages, pages.length);
  assert.ok(s.windowMs >= 200 && s.windowMs < 1000, `window ${s.windowMs}`);
  // Both figures are rounded from the unrounded window: recomputed from the rounded one, they may differ by 1.
  assert.ok(Math.abs(s.pagesPerSec - (pages.length * 1000) / s.windowMs) <= 1, `${s.pagesPerSec} pages/s over ${s.windowMs} ms`);
  assert.ok(Math.abs(s.bytesPerSec - s.pagesPerSec * PAGE_SIZE) <= PAGE_SIZE);
});

test("dirty rate: RAM over the budget is sampled every k-th 64 KiB block and scaled; an idle guest is 0", async () => {
  const ram = new Uint8Array(32 * MIB);
  // Every 16th page of all of RAM: 512 pages, evenly spread, so a sample of 1 block in 4 sees a quarter.
  const pages = Array.from({ length: 512 }, (_, i) => i * 16);
  const s = await sampleDirtyRate(guestWriting(ram, 8, pages), ram.length, { windowMs: 200, budgetBytes: 8 * MIB });
  assert.equal(s.exact, false);
  assert.equal(s.sampledPages, 2048);
  assert.equal(s.dirtySampledPages, 128);
  assert.equal(s.dirtyPages, 512);
  const idle = await sampleDirtyRate(() => ram, ram.length, { windowMs: 50 });
  assert.equal(idle.dirtyPages, 0);
  assert.equal(idle.pagesPerSec, 0);
});

test("dirty rate: the copy and the compare yield to the event loop between slices of 1 MiB (256 MiB RAM, 64 MiB sampled)", async () => {
  // Faulted in, as a running guest's RAM is (an untouched buffer would add a page fault per page read).
  const ram = new Uint8Array(256 * MIB).fill(3);
  // A callback that runs once per turn of the loop: the sampler must let it run between any two of its slices.
  let turns = 0;
  let spinning = true;
  const spin = () => {
    turns++;
    if (spinning) setImmediate(spin);
  };
  setImmediate(spin);
  const seen: number[] = [];
  const s = await sampleDirtyRate(
    () => {
      seen.push(turns);
      return ram;
    },
    ram.length,
    { windowMs: 100 },
  );
  spinning = false;
  assert.equal(s.exact, false); // 256 MiB over the 64 MiB default budget
  assert.equal(s.sampledPages, 16384);
  assert.equal(seen.length, 128, "64 slices to copy, 64 to compare");
  for (let i = 1; i < seen.length; i++) assert.ok((seen[i] as number) > (seen[i - 1] as number), `slices ${i - 1} and ${i} in one turn of the loop`);
  assert.ok(s.workMs < 5000, `work ${s.workMs} ms`);
});

test("dirty rate: a RAM view smaller than the memory is refused", async () => {
  await assert.rejects(sampleDirtyRate(() => new Uint8Array(4096), 8192, { windowMs: 1 }), /RAM view of 4096 bytes is smaller than 8192/);
  await assert.rejects(sampleDirtyRate(() => new Uint8Array(4096), 1000, { windowMs: 1 }), /not a positive multiple of 4096/);
});
