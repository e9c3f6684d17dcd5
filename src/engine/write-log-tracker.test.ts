import assert from "node:assert/strict";
import { test } from "node:test";
import { PAGE_SIZE } from "./engine.js";
import { ShadowDirtyTracker } from "./dirty-tracker.js";
import type { WriteLog } from "../sys/index.js";
import { WriteLogTracker } from "./write-log-tracker.js";

function wasmRam(pages: number): Uint8Array {
  const wasm = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number }) => { buffer: ArrayBuffer } } }).WebAssembly;
  return new Uint8Array(new wasm.Memory({ initial: Math.ceil((pages * PAGE_SIZE) / 65536) }).buffer, 0, pages * PAGE_SIZE);
}

test("write-log tracker: the shadow compare's contract (first take: pages not zero; then each write once; markDirty; resync)", (t) => {
  const ram = wasmRam(512);
  ram[3 * PAGE_SIZE] = 1; // before the tracker: not zero, listed by the first take
  const w = WriteLogTracker.open(ram);
  if ("unavailable" in w) return t.skip(`no kernel write log here: ${w.unavailable}`);
  const shadow = new ShadowDirtyTracker(ram.length);
  try {
    ram[10 * PAGE_SIZE + 7] = 2;
    assert.deepEqual([...w.take(ram)], [...shadow.take(ram)]);
    assert.deepEqual([...w.take(ram)], [], "nothing new");
    // Each later write once, as the shadow sees it.
    for (const p of [100, 5, 511]) ram[p * PAGE_SIZE + 1] = 3;
    w.markDirty(200);
    shadow.markDirty(200);
    assert.deepEqual([...w.take(ram)], [5, 100, 200, 511]);
    assert.deepEqual([...shadow.take(ram)], [5, 100, 200, 511]);
    // A write of the bytes a page already held: the log lists it (a superset), the compare cannot.
    ram[7 * PAGE_SIZE] = ram[7 * PAGE_SIZE] as number;
    assert.deepEqual([...w.take(ram)], [7]);
    // resync: nothing written so far is listed.
    ram[8 * PAGE_SIZE] = 4;
    w.markDirty(9);
    w.resync(ram);
    assert.deepEqual([...w.take(ram)], []);
    // copied(): a page written after it is listed all the same (the log records writes, whatever their bytes).
    w.copied(ram, [8]);
    ram[8 * PAGE_SIZE] = 5;
    assert.deepEqual([...w.take(ram)], [8]);
    assert.throws(() => w.markDirty(512), /outside guest RAM/);
  } finally {
    w.close();
  }
});

test("write-log tracker: RAM at another address (moved) is logged there, and that take lists every page", (t) => {
  const a = wasmRam(16);
  const w = WriteLogTracker.open(a);
  if ("unavailable" in w) return t.skip(`no kernel write log here: ${w.unavailable}`);
  try {
    w.take(a);
    const b = wasmRam(16);
    assert.equal(w.take(b).length, 16);
    b[2 * PAGE_SIZE] = 1;
    a[3 * PAGE_SIZE] = 1; // the old place: no longer followed
    assert.deepEqual([...w.take(b)], [2]);
  } finally {
    w.close();
  }
});

test("write-log tracker: pages a transfer copied before the first take are not listed again unless written after", (t) => {
  const ram = wasmRam(64);
  for (const p of [1, 2, 3]) ram[p * PAGE_SIZE] = 1; // not zero before the log
  const w = WriteLogTracker.open(ram);
  if ("unavailable" in w) return t.skip(`no kernel write log here: ${w.unavailable}`);
  try {
    w.copied(ram, [1, 2]); // pre-copy's first round sent them
    ram[2 * PAGE_SIZE] = 2; // written after the copy: listed
    assert.deepEqual([...w.take(ram)], [2, 3]);
  } finally {
    w.close();
  }
});

/** A write log another process would fill (qemu): pages are "written" by the test. */
class ScriptedLog implements WriteLog {
  readonly address = 0x7f00_0000_0000n;
  written = new Set<number>();
  closed = false;
  constructor(readonly length: number) {}
  takeWritten(): Uint32Array {
    if (this.closed) throw new Error("write log closed");
    const out = Uint32Array.from([...this.written].sort((a, b) => a - b));
    this.written.clear();
    return out;
  }
  close(): void {
    this.closed = true;
  }
}

test("write-log tracker over another process's log (qemu): writes through our view are not listed; switchTo keeps what the old log held", () => {
  const pages = 64;
  const ram = new Uint8Array(pages * PAGE_SIZE);
  ram[2 * PAGE_SIZE] = 1; // not zero before the first take: listed once, like the shadow's first take
  const first = new ScriptedLog(ram.length);
  const w = WriteLogTracker.over(ram.length, first);
  first.written.add(9);
  assert.deepEqual([...w.take(ram)], [2, 9]);
  ram[30 * PAGE_SIZE] = 5; // our own write: in no log of QEMU's
  assert.deepEqual([...w.take(ram)], []);
  // The standby replaces QEMU: a page the old one wrote and no take listed yet is kept, the old log closed.
  first.written.add(11);
  const second = new ScriptedLog(ram.length);
  second.written.add(40);
  w.switchTo(second);
  assert.equal(first.closed, true);
  w.markDirty(3);
  assert.deepEqual([...w.take(ram)], [3, 11, 40]);
  assert.throws(() => w.switchTo(new ScriptedLog(ram.length * 2)), /a write log of 524288 bytes for 262144 bytes/);
  assert.throws(() => WriteLogTracker.over(ram.length, new ScriptedLog(4096)), /a write log of 4096 bytes/);
});
