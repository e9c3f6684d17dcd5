import assert from "node:assert/strict";
import { test } from "node:test";
import { defineLayout } from "./layout.js";
import { machineHeaderLayout, memoryImageHeaderLayout } from "./memory-header.js";
import { toolstackHeaderLayout } from "./toolstack-header.js";
import { recordHeaderLayout } from "./framing.js";

test("layouts of the spec have the sizes the spec gives", () => {
  assert.equal(toolstackHeaderLayout.size, 16);
  assert.equal(memoryImageHeaderLayout.size, 24);
  assert.equal(machineHeaderLayout.size, 16);
  assert.equal(recordHeaderLayout.size, 8);
});

test("a layout encodes little-endian at the declared offsets and decodes back", () => {
  const layout = defineLayout("sample", 16, {
    a: { offset: 0, type: "u32", meaning: "a" },
    b: { offset: 4, type: "u16", meaning: "b" },
    c: { offset: 6, type: "u8", meaning: "c" },
    r: { offset: 7, type: "u8", meaning: "reserved", reserved: true },
    d: { offset: 8, type: "u64", meaning: "d" },
  });
  const bytes = layout.encode({ a: 0x01020304, b: 0x0506, c: 7, d: 0x1122334455667788n });
  assert.deepEqual([...bytes], [4, 3, 2, 1, 6, 5, 7, 0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
  assert.deepEqual(layout.decode(bytes), { a: 0x01020304, b: 0x0506, c: 7, d: 0x1122334455667788n });
  assert.equal(layout.reservedViolation(bytes), undefined);
  bytes[7] = 1;
  assert.equal(layout.reservedViolation(bytes), "r");
});

test("a layout rejects overlapping, misaligned or uncovered declarations and out-of-range values", () => {
  assert.throws(() => defineLayout("x", 8, { a: { offset: 0, type: "u64", meaning: "" }, b: { offset: 4, type: "u32", meaning: "" } }), /overlaps/);
  assert.throws(() => defineLayout("x", 8, { a: { offset: 2, type: "u32", meaning: "" }, b: { offset: 6, type: "u16", meaning: "" } }), /misaligned/);
  assert.throws(() => defineLayout("x", 8, { a: { offset: 0, type: "u32", meaning: "" } }), /not covered/);
  const l = defineLayout("x", 8, { a: { offset: 0, type: "u32", meaning: "" }, b: { offset: 4, type: "u32", meaning: "" } });
  assert.throws(() => l.encode({ a: 2 ** 32, b: 0 }), RangeError);
  assert.throws(() => l.encode({ a: -1, b: 0 }), RangeError);
  assert.throws(() => l.decode(new Uint8Array(7)), RangeError);
});
