import { test } from "node:test";
import assert from "node:assert/strict";
import { ConsoleBuffer } from "./console-buffer.js";

test("console buffer: bounded tail, subscribers, markers only at line start", async () => {
  const c = new ConsoleBuffer(16);
  const seen: string[] = [];
  const unsubscribe = c.subscribe((b) => seen.push(Buffer.from(b).toString()));
  const ready = c.waitForLine("READY");
  c.push(Buffer.from("echo READY\r\n")); // typed command echoed: not a marker
  c.push(Buffer.from("REA"));
  c.push(Buffer.from("DY redis\r\nmore"));
  assert.equal(await ready.promise, "READY redis");
  assert.equal(c.tailText(), "READY redis\r\nmore".slice(-16));
  assert.equal(c.tailBytes().length, 16);
  unsubscribe();
  c.push(Buffer.from("x"));
  assert.deepEqual(seen, ["echo READY\r\n", "REA", "DY redis\r\nmore"]);
});

test("console buffer: a cancelled wait never resolves", async () => {
  const c = new ConsoleBuffer();
  const w = c.waitForLine("X");
  w.cancel();
  c.push(Buffer.from("X\n"));
  const r = await Promise.race([w.promise.then(() => "resolved"), new Promise((res) => setImmediate(() => res("pending")))]);
  assert.equal(r, "pending");
});
