import assert from "node:assert/strict";
import { test } from "node:test";
import { openWriteLog } from "./write-log.js";

const PAGE = 4096;

/** Wasm memory, as v86's guest RAM: off the JS heap, never moved while it does not grow. */
function wasmBytes(pages: number, offset: number): Uint8Array {
  const wasm = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number }) => { buffer: ArrayBuffer } } }).WebAssembly;
  const memory = new wasm.Memory({ initial: Math.ceil((pages * PAGE + offset) / 65536) + 1 });
  return new Uint8Array(memory.buffer, offset, pages * PAGE);
}

test("write log: lists exactly the pages written since the last take, each once, re-armed", (t) => {
  const ram = wasmBytes(2048, 0);
  ram.fill(1); // before the log: not listed
  const log = openWriteLog(ram);
  if ("unavailable" in log) return t.skip(`no kernel write log here: ${log.unavailable}`);
  try {
    assert.deepEqual([...log.takeWritten()], []);
    for (const p of [7, 3, 2047, 1000]) ram[p * PAGE + 100] = 9;
    ram[3 * PAGE + 5] = 9; // twice in one page: listed once
    assert.deepEqual([...log.takeWritten()], [3, 7, 1000, 2047]);
    assert.deepEqual([...log.takeWritten()], [], "re-armed: nothing new");
    ram[7 * PAGE] = 9; // the same page again, after the take
    ram[8 * PAGE] = ram[8 * PAGE] as number; // a write of the same value is a write
    assert.deepEqual([...log.takeWritten()], [7, 8]);
    ram.fill(2, 100 * PAGE, 300 * PAGE); // a run of pages: regions, not pages, come back
    assert.equal(log.takeWritten().length, 200);
  } finally {
    log.close();
  }
});

test("write log: more written regions than one scan returns are all listed", (t) => {
  const ram = wasmBytes(20_000, 0);
  const log = openWriteLog(ram);
  if ("unavailable" in log) return t.skip(`no kernel write log here: ${log.unavailable}`);
  try {
    for (let p = 0; p < 20_000; p += 2) ram[p * PAGE] = 1; // 10 000 separate regions (4096 per call)
    const w = log.takeWritten();
    assert.equal(w.length, 10_000);
    assert.equal(w[0], 0);
    assert.equal(w[9999], 19_998);
  } finally {
    log.close();
  }
});

test("write log: a buffer not on a page boundary lists both pages a written host page holds bytes of", (t) => {
  const ram = wasmBytes(64, 100);
  const log = openWriteLog(ram);
  if ("unavailable" in log) return t.skip(`no kernel write log here: ${log.unavailable}`);
  try {
    ram[5 * PAGE + 10] = 1; // host page (5*4096+110)/4096 = 5 holds bytes of buffer pages 4 and 5
    assert.deepEqual([...log.takeWritten()], [4, 5]);
    ram[63 * PAGE + 4095] = 1; // the last byte: host page 64 (past the buffer's own 64 pages) maps to page 63 only
    assert.deepEqual([...log.takeWritten()], [63]);
  } finally {
    log.close();
  }
});
