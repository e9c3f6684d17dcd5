import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { test } from "node:test";
import { writableSink } from "./sink.js";

/** A Writable that records each write the stream hands down (a corked burst arrives as one _writev). */
function recorder(): { stream: Writable; calls: number[][] } {
  const calls: number[][] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      calls.push([chunk.length]);
      cb();
    },
    writev(chunks, cb) {
      calls.push(chunks.map((c) => (c.chunk as Buffer).length));
      cb();
    },
  });
  return { stream, calls };
}

const turn = () => new Promise<void>((r) => setImmediate(r));

test("writableSink: coalesce hands one callback's writes down together, chained ones included, in order; a later callback's apart", async () => {
  const { stream, calls } = recorder();
  const sink = writableSink(stream, { coalesce: true });
  await new Promise<void>((resolve) => {
    setImmediate(() => {
      // As StreamWriter does: every write from inside a promise chain (its async toSink), each chained on the last.
      void Promise.resolve()
        .then(() => sink.write(new Uint8Array(1)))
        .then(() => sink.write(new Uint8Array(2)))
        .then(() => sink.write(new Uint8Array(3)));
      assert.deepEqual(calls, [], "held while the callback runs");
      resolve();
    });
  });
  await turn();
  assert.deepEqual(calls, [[1, 2, 3]]);
  await sink.write(new Uint8Array(4));
  await turn();
  assert.deepEqual(calls, [[1, 2, 3], [4]]);
});

test("writableSink: without coalesce each write goes down at once", async () => {
  const { stream, calls } = recorder();
  const sink = writableSink(stream);
  await sink.write(new Uint8Array(1));
  await sink.write(new Uint8Array(2));
  assert.deepEqual(calls, [[1], [2]]);
});
