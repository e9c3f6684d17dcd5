/**
 * NBD commands against the backend, with a hand-written client: bounds,
 * alignment, lengths, flags, read-only exports, FLUSH/FUA ordering, backend
 * failures, and a pipelined request stream cut into arbitrary pieces.
 */
import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";
import { ByteQueue } from "./byte-queue.js";
import * as P from "./nbd-protocol.js";
import { encodeRequest, startTestServer, type RequestFields, type TestServer } from "./nbd-test-client.js";

const MiB = 1024 * 1024;
let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

async function server(size = MiB, opts = {}): Promise<TestServer> {
  t = await startTestServer(size, opts);
  return t;
}

/** mulberry32, seeded: a failure is reproducible. */
function prng(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), a | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return Math.floor((((x ^ (x >>> 14)) >>> 0) / 2 ** 32) * n);
  };
}

describe("NBD commands", () => {
  test("out of bounds: EINVAL for READ/TRIM, ENOSPC for writes (payload consumed); a 64-bit offset does not wrap", async () => {
    const s = await server();
    const c = await s.open();
    const cases: Array<[RequestFields, number]> = [
      [{ type: P.NBD_CMD_READ, offset: MiB - 512, length: 1024 }, P.NBD_EINVAL],
      [{ type: P.NBD_CMD_READ, offset: 2n ** 64n - 512n, length: 1024 }, P.NBD_EINVAL],
      [{ type: P.NBD_CMD_READ, offset: MiB, length: 0 }, 0],
      [{ type: P.NBD_CMD_WRITE, offset: MiB, data: Buffer.alloc(512, 1) }, P.NBD_ENOSPC],
      [{ type: P.NBD_CMD_WRITE_ZEROES, offset: MiB - 512, length: 1024 }, P.NBD_ENOSPC],
      [{ type: P.NBD_CMD_TRIM, offset: 2n ** 63n, length: 512 }, P.NBD_EINVAL],
      [{ type: P.NBD_CMD_READ, offset: MiB - 512, length: 512 }, 0],
    ];
    let cookie = 1n;
    for (const [req, error] of cases) {
      const r = await c.request({ ...req, cookie });
      assert.equal(r.error, error, `${P.commandName(req.type)} ${req.offset} +${req.length ?? req.data?.length}`);
      assert.equal(r.cookie, cookie++);
    }
    assert.ok(!s.disk.calls.some((x) => x.startsWith("write")));
    assert.equal(s.server.stats.errors, 5);
    assert.match(s.server.stats.lastError ?? "", /TRIM \[9223372036854775808, \+512\) cookie 6: error 22: beyond the end of the 1048576-byte export/);
  });

  test("alignment to the minimum block size (512), and a byte-granular export (minBlockSize 1)", async () => {
    const s = await server();
    const c = await s.open();
    assert.equal((await c.request({ type: P.NBD_CMD_READ, offset: 100, length: 512 })).error, P.NBD_EINVAL);
    assert.equal((await c.request({ type: P.NBD_CMD_WRITE, offset: 512, data: Buffer.alloc(100) })).error, P.NBD_EINVAL);
    await s.close();
    const b = await server(1000, { minBlockSize: 1 });
    const d = await b.open();
    assert.equal((await d.request({ type: P.NBD_CMD_WRITE, offset: 997, data: Buffer.from([1, 2, 3]) })).error, 0);
    const r = await d.request({ type: P.NBD_CMD_READ, offset: 996, length: 4 });
    assert.deepEqual([...r.data], [0, 1, 2, 3]);
  });

  test("lengths: READ beyond the maximum payload is EINVAL, WRITE_ZEROES beyond it EOVERFLOW; the connection carries on", async () => {
    const s = await server(64 * MiB);
    const c = await s.open();
    assert.equal((await c.request({ type: P.NBD_CMD_READ, length: 33 * MiB })).error, P.NBD_EINVAL);
    assert.equal((await c.request({ type: P.NBD_CMD_WRITE_ZEROES, length: 33 * MiB })).error, P.NBD_EOVERFLOW);
    const r = await c.request({ type: P.NBD_CMD_READ, length: 32 * MiB });
    assert.equal(r.error, 0);
    assert.equal(r.data.length, 32 * MiB);
  });

  test("unknown commands and flags are EINVAL (DF, FAST_ZERO, REQ_ONE were not offered); FUA is accepted on any command", async () => {
    const s = await server();
    const c = await s.open();
    const cases: Array<[RequestFields, number]> = [
      [{ type: 42, length: 512 }, P.NBD_EINVAL],
      [{ type: P.NBD_CMD_BLOCK_STATUS, length: 512 }, P.NBD_EINVAL],
      [{ type: P.NBD_CMD_CACHE, length: 512 }, P.NBD_EINVAL],
      [{ type: P.NBD_CMD_READ, length: 512, flags: P.NBD_CMD_FLAG_DF }, P.NBD_EINVAL],
      [{ type: P.NBD_CMD_WRITE_ZEROES, length: 512, flags: P.NBD_CMD_FLAG_FAST_ZERO }, P.NBD_EINVAL],
      [{ type: P.NBD_CMD_FLUSH, flags: P.NBD_CMD_FLAG_REQ_ONE }, P.NBD_EINVAL],
      [{ type: P.NBD_CMD_READ, length: 512, flags: P.NBD_CMD_FLAG_FUA }, 0],
      [{ type: P.NBD_CMD_WRITE_ZEROES, length: 512, flags: P.NBD_CMD_FLAG_NO_HOLE }, 0],
      [{ type: P.NBD_CMD_TRIM, length: 512, flags: P.NBD_CMD_FLAG_FUA }, 0],
    ];
    for (const [req, error] of cases) assert.equal((await c.request(req)).error, error, JSON.stringify(req, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v)));
  });

  test("FLUSH and FUA call backend.flush() before the reply is sent; a plain WRITE does not", async () => {
    const s = await server();
    const c = await s.open();
    await c.request({ type: P.NBD_CMD_WRITE, offset: 0, data: Buffer.alloc(4096, 1) });
    assert.deepEqual(s.disk.calls, ["write 0 4096"]);
    await c.request({ type: P.NBD_CMD_FLUSH });
    assert.deepEqual(s.disk.calls, ["write 0 4096", "flush"]);
    await c.request({ type: P.NBD_CMD_WRITE, offset: 4096, flags: P.NBD_CMD_FLAG_FUA, data: Buffer.alloc(512, 2) });
    assert.deepEqual(s.disk.calls.slice(2), ["write 4096 512", "flush"]);
    await c.request({ type: P.NBD_CMD_WRITE_ZEROES, offset: 0, length: 2048, flags: P.NBD_CMD_FLAG_FUA });
    assert.deepEqual(s.disk.calls.slice(4), ["write 0 2048", "flush"]);
    assert.deepEqual([...s.disk.bytes.subarray(2046, 2050)], [0, 0, 1, 1]);
    const st = s.server.stats;
    assert.deepEqual([st.flushes, st.fuaWrites, st.backendFlushes, st.writes, st.zeroWrites], [1, 2, 3, 2, 1]);
  });

  test("a backend that throws: EIO for that request, the next one is served", async () => {
    const s = await server();
    const c = await s.open();
    s.disk.failNextWrite = new Error("disk on fire");
    assert.equal((await c.request({ type: P.NBD_CMD_WRITE, data: Buffer.alloc(512, 3), cookie: 7n })).error, P.NBD_EIO);
    assert.match(s.warnings.join("\n"), /WRITE \[0, \+512\) cookie 7: error 5: backend write failed: disk on fire/);
    assert.equal((await c.request({ type: P.NBD_CMD_WRITE, data: Buffer.alloc(512, 4) })).error, 0);
    assert.equal(s.disk.bytes[0], 4);
  });

  test("a read-only export: READ_ONLY flag, EPERM for WRITE/WRITE_ZEROES/TRIM (backend untouched), READ and FLUSH work", async () => {
    const s = await server(MiB, { readOnly: true });
    const c = await s.connect();
    const info = await c.open();
    assert.ok((info.flags & P.NBD_FLAG_READ_ONLY) !== 0);
    assert.equal((await c.request({ type: P.NBD_CMD_WRITE, data: Buffer.alloc(4096, 5) })).error, P.NBD_EPERM);
    assert.equal((await c.request({ type: P.NBD_CMD_WRITE_ZEROES, length: 4096 })).error, P.NBD_EPERM);
    assert.equal((await c.request({ type: P.NBD_CMD_TRIM, length: 4096 })).error, P.NBD_EPERM);
    assert.equal((await c.request({ type: P.NBD_CMD_READ, length: 4096 })).error, 0);
    assert.equal((await c.request({ type: P.NBD_CMD_FLUSH })).error, 0);
    assert.ok(!s.disk.calls.some((x) => x.startsWith("write")));
  });

  test("300 pipelined requests sent in random pieces: handled in order, replies in order, bytes as a model says", async () => {
    const size = 256 * 1024;
    const s = await server(size);
    const c = await s.open();
    const rnd = prng(12345);
    const model = new Uint8Array(size);
    const reqs: RequestFields[] = [];
    const expected: Array<{ cookie: bigint; data?: Uint8Array }> = [];
    for (let i = 0; i < 300; i++) {
      const cookie = BigInt(1000 + i);
      const offset = rnd(size / 512 - 16) * 512;
      const length = (1 + rnd(16)) * 512;
      const kind = rnd(4);
      if (kind < 2) {
        const data = Buffer.alloc(length, (i % 250) + 1);
        reqs.push({ type: P.NBD_CMD_WRITE, cookie, offset, data });
        model.set(data, offset);
        expected.push({ cookie });
      } else if (kind === 2) {
        reqs.push({ type: P.NBD_CMD_READ, cookie, offset, length });
        expected.push({ cookie, data: model.slice(offset, offset + length) });
      } else {
        reqs.push({ type: P.NBD_CMD_FLUSH, cookie });
        expected.push({ cookie });
      }
    }
    const stream = Buffer.concat(reqs.map(encodeRequest));
    for (let at = 0; at < stream.length; ) {
      const n = 1 + rnd(700);
      c.write(stream.subarray(at, at + n));
      at += n;
      if (rnd(8) === 0) await new Promise((r) => setImmediate(r));
    }
    for (const e of expected) {
      const r = await c.readSimpleReply(e.data?.length ?? 0);
      assert.equal(r.cookie, e.cookie);
      assert.equal(r.error, 0);
      if (e.data !== undefined) assert.ok(Buffer.from(e.data).equals(r.data), `READ cookie ${e.cookie}`);
    }
    assert.ok(Buffer.from(model).equals(Buffer.from(s.disk.bytes)));
  });

  test("a client that pipelines 48 MiB of READs and does not read: the server stops reading (bounded memory), then finishes", async () => {
    const s = await server(8 * MiB);
    const c = await s.open();
    const n = 48;
    c.pause();
    c.write(Buffer.concat(Array.from({ length: n }, (_, i) => encodeRequest({ type: P.NBD_CMD_READ, cookie: BigInt(i), offset: (i % 8) * MiB, length: MiB }))));
    await new Promise((r) => setTimeout(r, 150));
    const servedWhileBlocked = s.server.stats.reads;
    assert.ok(servedWhileBlocked < n / 2, `the server kept reading while its output was backed up (${servedWhileBlocked} reads)`);
    c.resume();
    for (let i = 0; i < n; i++) assert.equal((await c.readSimpleReply(MiB)).cookie, BigInt(i));
    assert.equal(s.server.stats.reads, n);
  });
});

describe("ByteQueue", () => {
  test("takes messages across chunk boundaries; inside a chunk a take is a view", () => {
    const q = new ByteQueue();
    const a = Buffer.from([1, 2, 3]);
    q.push(a);
    q.push(Buffer.from([4, 5]));
    q.push(Buffer.alloc(0));
    q.push(Buffer.from([6]));
    assert.equal(q.length, 6);
    const first = q.take(2);
    assert.deepEqual([...first], [1, 2]);
    a[0] = 99;
    assert.equal(first[0], 99, "a view, not a copy");
    assert.deepEqual([...q.take(4)], [3, 4, 5, 6]);
    assert.equal(q.length, 0);
    assert.equal(q.take(0).length, 0);
    assert.throws(() => q.take(1), RangeError);
  });
});
