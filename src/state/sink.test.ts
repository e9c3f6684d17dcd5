import assert from "node:assert/strict";
import { createServer, connect, type AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { test } from "node:test";
import { writableSink } from "./sink.js";
import { emuMachine, SAMPLE_VM_CONFIG } from "./testing.js";
import { StreamWriter } from "./writer.js";

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

test("writableSink: flush() hands corked writes down at once and resolves once they are written, so a close right after loses nothing", async () => {
  const { stream, calls } = recorder();
  const sink = writableSink(stream, { coalesce: true });
  await sink.write(new Uint8Array(5));
  await sink.write(new Uint8Array(6));
  assert.deepEqual(calls, [], "still corked: the tick has not come");
  await sink.flush?.();
  assert.deepEqual(calls, [[5, 6]]);
  stream.destroy(); // as the primary does after the END: nothing was held back
  assert.deepEqual(calls, [[5, 6]]);
});

test("writableSink over a real socket: END-like last bytes written, flushed and the socket destroyed in the same callback reach the peer", async () => {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  const received = new Promise<number>((resolve) => {
    server.once("connection", (peer) => {
      let n = 0;
      peer.on("data", (d: Buffer) => (n += d.length));
      peer.on("close", () => resolve(n));
    });
  });
  const client = connect(port, "127.0.0.1");
  await new Promise<void>((r) => client.once("connect", r));
  const sink = writableSink(client, { coalesce: true });
  await sink.write(new Uint8Array(100));
  await sink.write(new Uint8Array(28));
  await sink.flush?.();
  client.destroy();
  assert.equal(await received, 128);
  server.close();
});

test("writableSink: flush() rejects once a write failed", async () => {
  const stream = new Writable({
    write(_chunk, _enc, cb) {
      cb(new Error("EPIPE"));
    },
  });
  stream.on("error", () => undefined);
  const sink = writableSink(stream, { coalesce: true });
  await sink.write(new Uint8Array(1)).catch(() => undefined);
  await assert.rejects(sink.flush?.() ?? Promise.resolve(), /EPIPE/);
});

test("StreamWriter.sendNow: a record awaited on a coalescing sink is handed down before the callback's next (synchronous) work", async () => {
  const { stream, calls } = recorder();
  const writer = new StreamWriter(writableSink(stream, { coalesce: true }), { machine: emuMachine(4) });
  await writer.writeVmConfig(SAMPLE_VM_CONFIG);
  assert.equal(calls.length, 0, "corked: nothing handed down yet");
  writer.sendNow();
  assert.equal(calls.length, 1, "handed down by sendNow itself, not at the next tick");
  await writer.writeMemoryStream();
  await turn();
  assert.equal(calls.length, 2, "without sendNow, at the next tick");
});
