import { test } from "node:test";
import assert from "node:assert/strict";
import { tapNameFor } from "./tap-name.js";

test("tap names fit IFNAMSIZ and stay distinct", () => {
  assert.equal(tapNameFor("guest"), "cv-guest");
  const a = tapNameFor("a-very-long-vm-name-1");
  const b = tapNameFor("a-very-long-vm-name-2");
  assert.ok(a.length <= 15 && b.length <= 15, `${a} ${b}`);
  assert.notEqual(a, b);
  assert.ok(tapNameFor("guest", 1).endsWith(".1"));
});
