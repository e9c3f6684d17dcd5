/**
 * NbdSession at the protocol level, with a hand-written client: the
 * handshake's options, and every way a peer can break the framing (each
 * drops only that connection, logged with the reason). Commands are in
 * nbd-transmission.test.ts; QEMU's own client in nbd-server.test.ts.
 */
import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";
import * as P from "./nbd-protocol.js";
import { encodeOption, encodeRequest, startTestServer, type TestServer } from "./nbd-test-client.js";

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

/** Waits (up to 2 s) for a condition the server reaches on its own schedule. */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(cond(), "condition not reached within 2 s");
}

const FLAGS = P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_SEND_FLUSH | P.NBD_FLAG_SEND_FUA | P.NBD_FLAG_SEND_TRIM | P.NBD_FLAG_SEND_WRITE_ZEROES;

describe("NBD handshake", () => {
  test("the greeting offers fixed newstyle and no-zeroes", async () => {
    const s = await server();
    const c = await s.connect();
    assert.equal(await c.handshake(), P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES);
  });

  test("NBD_OPT_LIST names the one export, then ACK; with data it is NBD_REP_ERR_INVALID", async () => {
    const s = await server(MiB, { exportName: "vda" });
    const c = await s.connect();
    await c.handshake();
    c.write(encodeOption(P.NBD_OPT_LIST));
    const srv = await c.readOptionReply();
    assert.equal(srv.type, P.NBD_REP_SERVER);
    assert.equal(srv.option, P.NBD_OPT_LIST);
    assert.equal(srv.data.readUInt32BE(0), 3);
    assert.equal(srv.data.subarray(4).toString(), "vda");
    assert.equal((await c.readOptionReply()).type, P.NBD_REP_ACK);
    c.write(encodeOption(P.NBD_OPT_LIST, Buffer.from("x")));
    assert.equal((await c.readOptionReply()).type, P.NBD_REP_ERR_INVALID);
  });

  test("unknown options, STRUCTURED_REPLY and STARTTLS get NBD_REP_ERR_UNSUP; the next option is parsed", async () => {
    const s = await server();
    const c = await s.connect();
    await c.handshake();
    for (const [option, data] of [[0x1234, Buffer.alloc(100, 7)], [P.NBD_OPT_STRUCTURED_REPLY, Buffer.alloc(0)], [P.NBD_OPT_STARTTLS, Buffer.alloc(0)], [P.NBD_OPT_SET_META_CONTEXT, Buffer.alloc(12)]] as const) {
      c.write(encodeOption(option, data));
      const r = await c.readOptionReply();
      assert.equal(r.option, option);
      assert.equal(r.type, P.NBD_REP_ERR_UNSUP);
    }
    const go = await c.info(P.NBD_OPT_GO, "");
    assert.equal(go[go.length - 1]?.type, P.NBD_REP_ACK);
    assert.equal((await c.request({ type: P.NBD_CMD_READ, length: 512 })).error, 0);
  });

  test("NBD_OPT_INFO: export size and flags, block sizes, name on request; unknown name and bad lengths are errors", async () => {
    const s = await server(2 * MiB, { exportName: "vda" });
    const c = await s.connect();
    await c.handshake();
    const replies = await c.info(P.NBD_OPT_INFO, "", [P.NBD_INFO_BLOCK_SIZE, P.NBD_INFO_NAME]);
    assert.equal(replies[replies.length - 1]?.type, P.NBD_REP_ACK);
    const byType = new Map(replies.filter((r) => r.type === P.NBD_REP_INFO).map((r) => [r.data.readUInt16BE(0), r.data]));
    const exp = byType.get(P.NBD_INFO_EXPORT);
    assert.ok(exp !== undefined && exp.length === 12);
    assert.equal(exp.readBigUInt64BE(2), BigInt(2 * MiB));
    assert.equal(exp.readUInt16BE(10), FLAGS);
    const bs = byType.get(P.NBD_INFO_BLOCK_SIZE);
    assert.ok(bs !== undefined && bs.length === 14);
    assert.deepEqual([bs.readUInt32BE(2), bs.readUInt32BE(6), bs.readUInt32BE(10)], [512, 4096, 32 * MiB]);
    assert.equal(byType.get(P.NBD_INFO_NAME)?.subarray(2).toString(), "vda");

    const unknown = await c.info(P.NBD_OPT_INFO, "other");
    assert.equal(unknown.length, 1);
    assert.equal(unknown[0]?.type, P.NBD_REP_ERR_UNKNOWN);
    assert.match(unknown[0]?.data.toString() ?? "", /no export "other"/);
    const bad = Buffer.alloc(8); // name length 100 in 8 bytes of data
    bad.writeUInt32BE(100, 0);
    c.write(encodeOption(P.NBD_OPT_INFO, bad));
    assert.equal((await c.readOptionReply()).type, P.NBD_REP_ERR_INVALID);
    // INFO does not end the handshake: GO by the export's own name does.
    const go = await c.info(P.NBD_OPT_GO, "vda");
    assert.equal(go[go.length - 1]?.type, P.NBD_REP_ACK);
    assert.equal((await c.request({ type: P.NBD_CMD_FLUSH })).error, 0);
  });

  test("NBD_OPT_ABORT is acknowledged and the server closes", async () => {
    const s = await server();
    const c = await s.connect();
    await c.handshake();
    c.write(encodeOption(P.NBD_OPT_ABORT));
    assert.equal((await c.readOptionReply()).type, P.NBD_REP_ACK);
    await c.closed;
    assert.equal(s.server.stats.droppedConnections, 0);
    assert.match(s.infos.join("\n"), /NBD_OPT_ABORT/);
  });

  test("NBD_OPT_EXPORT_NAME (the old way): size and flags, 124 zero bytes unless NO_ZEROES; then transmission", async () => {
    const s = await server();
    for (const noZeroes of [true, false]) {
      const c = await s.connect();
      await c.handshake(P.NBD_FLAG_C_FIXED_NEWSTYLE | (noZeroes ? P.NBD_FLAG_C_NO_ZEROES : 0));
      c.write(encodeOption(P.NBD_OPT_EXPORT_NAME, Buffer.from("disk")));
      const r = await c.read(noZeroes ? 10 : 134);
      assert.equal(r.readBigUInt64BE(0), BigInt(MiB));
      assert.equal(r.readUInt16BE(8), FLAGS);
      assert.ok(r.subarray(10).every((b) => b === 0));
      assert.equal((await c.request({ type: P.NBD_CMD_READ, length: 4096, cookie: 5n })).cookie, 5n);
    }
  });

  test("NBD_OPT_EXPORT_NAME for another export drops the client (the option cannot fail softly)", async () => {
    const s = await server();
    const c = await s.connect();
    await c.handshake();
    c.write(encodeOption(P.NBD_OPT_EXPORT_NAME, Buffer.from("nope")));
    await c.closed;
    assert.match(s.server.stats.lastError ?? "", /dropped: NBD_OPT_EXPORT_NAME for export "nope"/);
  });
});

describe("NBD framing violations drop the connection only", () => {
  async function expectDrop(s: TestServer, pattern: RegExp): Promise<void> {
    assert.equal(s.server.stats.droppedConnections, 1);
    assert.match(s.warnings.join("\n"), pattern);
    assert.match(s.server.stats.lastError ?? "", pattern);
    assert.ok(s.warnings.some((w) => w.includes(s.server.socketPath) && w.includes('export "disk"')), "the log names socket and export");
    // The server serves the next client.
    const c = await s.open();
    assert.equal((await c.request({ type: P.NBD_CMD_READ, length: 512 })).error, 0);
  }

  test("client flags with unknown bits", async () => {
    const s = await server();
    const c = await s.connect();
    await c.handshake(0x80000001);
    await c.closed;
    await expectDrop(s, /client flags 0x80000001 set bits we did not offer/);
  });

  test("a bad option magic", async () => {
    const s = await server();
    const c = await s.connect();
    await c.handshake();
    const o = encodeOption(P.NBD_OPT_LIST);
    o.writeUInt32BE(0xdeadbeef, 0);
    c.write(o);
    await c.closed;
    await expectDrop(s, /option header magic 0xdeadbeef/);
  });

  test("option data longer than we buffer (no allocation of the claimed length)", async () => {
    const s = await server();
    const c = await s.connect();
    await c.handshake();
    const o = encodeOption(P.NBD_OPT_GO);
    o.writeUInt32BE(0xffffffff, 12);
    c.write(o);
    await c.closed;
    await expectDrop(s, /NBD_OPT_GO with 4294967295 bytes of data/);
  });

  test("a bad request magic", async () => {
    const s = await server();
    const c = await s.open();
    assert.equal((await c.request({ type: P.NBD_CMD_READ, length: 512 })).error, 0);
    c.write(encodeRequest({ type: P.NBD_CMD_READ, length: 512, magic: 0x12560953 }));
    await c.closed;
    await expectDrop(s, /request 2: magic 0x12560953 \(expected 0x25609513\)/);
  });

  test("a truncated request header, then EOF", async () => {
    const s = await server();
    const c = await s.open();
    c.write(encodeRequest({ type: P.NBD_CMD_READ, length: 512 }).subarray(0, 20));
    c.end();
    await c.closed;
    await expectDrop(s, /peer closed inside a message \(requestHeader\): 20 of 28 bytes arrived/);
  });

  test("a truncated write payload, then EOF: nothing is written", async () => {
    const s = await server();
    const c = await s.open();
    c.write(encodeRequest({ type: P.NBD_CMD_WRITE, data: Buffer.alloc(4096, 1) }).subarray(0, 28 + 1000));
    c.end();
    await c.closed;
    await expectDrop(s, /peer closed inside the payload of request 1: 1000 of 4096 bytes arrived/);
    assert.ok(!s.disk.calls.some((x) => x.startsWith("write")));
  });

  test("a WRITE longer than the maximum payload (its data is never buffered)", async () => {
    const s = await server();
    const c = await s.open();
    c.write(encodeRequest({ type: P.NBD_CMD_WRITE, length: 0xfffffe00, cookie: 3n }));
    await c.closed;
    await expectDrop(s, /WRITE of 4294966784 bytes at 0 \(cookie 3\) exceeds the maximum payload 33554432/);
  });

  test("random bytes after the handshake", async () => {
    const s = await server();
    const c = await s.open();
    c.write(Buffer.from("GET / HTTP/1.1\r\nHost: example\r\n\r\n"));
    await c.closed;
    await expectDrop(s, /request 1: magic 0x47455420/);
  });
});

describe("NBD connection ends", () => {
  test("NBD_CMD_DISC after pipelined requests: they are all answered, then the server closes", async () => {
    const s = await server();
    const c = await s.open();
    c.write(Buffer.concat([
      encodeRequest({ type: P.NBD_CMD_WRITE, cookie: 1n, data: Buffer.alloc(512, 9) }),
      encodeRequest({ type: P.NBD_CMD_FLUSH, cookie: 2n }),
      encodeRequest({ type: P.NBD_CMD_DISC, cookie: 3n }),
    ]));
    assert.equal((await c.readSimpleReply()).cookie, 1n);
    assert.equal((await c.readSimpleReply()).cookie, 2n);
    await c.closed;
    assert.equal(s.disk.bytes[511], 9);
    assert.match(s.infos.join("\n"), /NBD_CMD_DISC\) after 2 request/);
    assert.equal(s.server.stats.droppedConnections, 0);
  });

  test("a client that closes between requests is not a violation", async () => {
    const s = await server();
    const c = await s.open();
    c.end();
    await c.closed;
    assert.equal(s.server.stats.droppedConnections, 0);
    assert.match(s.infos.join("\n"), /closed without NBD_CMD_DISC/);
    await until(() => s.server.stats.activeConnections === 0); // the server's socket closes after the client's
  });

  test("close() drops connected clients and stops listening", async () => {
    const s = await server();
    const c = await s.open();
    await s.server.close();
    await c.closed;
    await assert.rejects(s.connect());
  });
});
