import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type AddressInfo, type Socket } from "node:net";
import {
  encodeArray,
  encodeBulk,
  encodeCommand,
  encodeError,
  encodeInteger,
  encodeSimple,
  RespError,
  RespParser,
  RespProtocolError,
  type RespValue,
} from "./resp.js";
import { RespConnection, RespConnectionError } from "./resp-connection.js";
import { monotonicMs } from "../sys/clock.js";

const stream = Buffer.concat([
  encodeSimple("OK"),
  encodeError("ERR wrong type"),
  encodeInteger(-42),
  encodeInteger(9007199254740991),
  encodeBulk("héllo\r\nworld"),
  encodeBulk(""),
  encodeBulk(null),
  encodeArray([encodeBulk("a"), encodeInteger(1), encodeArray([encodeSimple("x"), encodeBulk(null)]), encodeArray([])]),
  encodeArray(null),
]);
const expected: RespValue[] = [
  "OK",
  new RespError("ERR wrong type"),
  -42,
  9007199254740991,
  "héllo\r\nworld",
  "",
  null,
  ["a", 1, ["x", null], []],
  null,
];

test("resp: every reply type, in one chunk", () => {
  assert.deepEqual(new RespParser().feed(stream), expected);
});

test("resp: the same stream split at every byte boundary, and fed one byte at a time", () => {
  for (let cut = 0; cut <= stream.length; cut++) {
    const p = new RespParser();
    const got = [...p.feed(stream.subarray(0, cut)), ...p.feed(stream.subarray(cut))];
    assert.deepEqual(got, expected, `split at ${cut}`);
    assert.equal(p.pending, 0);
  }
  const p = new RespParser();
  const got: RespValue[] = [];
  for (let i = 0; i < stream.length; i++) got.push(...p.feed(stream.subarray(i, i + 1)));
  assert.deepEqual(got, expected);
});

test("resp: a partial value stays pending until complete", () => {
  const p = new RespParser();
  assert.deepEqual(p.feed(Buffer.from("*2\r\n$3\r\nfo")), []);
  assert.ok(p.pending > 0);
  assert.deepEqual(p.feed(Buffer.from("o\r\n:7\r\n+PO")), [["foo", 7]]);
  assert.deepEqual(p.feed(Buffer.from("NG\r\n")), ["PONG"]);
});

test("resp: commands are arrays of bulk strings (byte lengths, not characters)", () => {
  assert.equal(encodeCommand(["SET", "k", "é", 5]).toString(), "*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\né\r\n$1\r\n5\r\n");
  assert.deepEqual(new RespParser().feed(encodeCommand(["SET", "k", "é"])), [["SET", "k", "é"]]);
});

test("resp: bytes that are not RESP are a protocol error", () => {
  assert.throws(() => new RespParser().feed(Buffer.from("?what\r\n")), RespProtocolError);
  assert.throws(() => new RespParser().feed(Buffer.from(":12x\r\n")), RespProtocolError);
  assert.throws(() => new RespParser().feed(Buffer.from("$3\r\nabcd\r\n")), RespProtocolError);
});

async function rawServer(onData: (socket: Socket, data: Buffer) => void): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on("error", () => {});
    s.on("data", (d: Buffer) => onData(s, d));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

test("resp connection: a reply split across writes, an error reply as a value, pipelined replies in order", async () => {
  const srv = await rawServer((s, d) => {
    const text = d.toString();
    if (text.includes("PING")) {
      s.write("+PO");
      setTimeout(() => s.write("NG\r\n"), 20);
    } else if (text.includes("BAD")) s.write("-ERR unknown command 'BAD'\r\n");
    else if (text.includes("MULTI3")) s.write(":1\r\n:2\r\n:3\r\n");
  });
  const c = await RespConnection.connect("127.0.0.1", srv.port);
  try {
    assert.equal(await c.command(["PING"]), "PONG");
    assert.deepEqual(await c.command(["BAD"]), new RespError("ERR unknown command 'BAD'"));
    assert.deepEqual(await c.pipeline([["MULTI3"], ["x"], ["y"]]), [1, 2, 3]);
  } finally {
    c.close();
    await srv.close();
  }
});

test("resp connection: no reply in time is TIMEOUT and closes; a reset is ECONNRESET; refused connect", async () => {
  const srv = await rawServer((s, d) => {
    if (d.toString().includes("RESET")) s.resetAndDestroy();
  });
  try {
    const c = await RespConnection.connect("127.0.0.1", srv.port);
    const t0 = monotonicMs();
    await assert.rejects(c.command(["HANG"], 100), (e: unknown) => e instanceof RespConnectionError && e.code === "TIMEOUT");
    assert.ok(monotonicMs() - t0 < 1000);
    assert.ok(c.closed);
    await assert.rejects(c.command(["PING"]), RespConnectionError);

    const r = await RespConnection.connect("127.0.0.1", srv.port);
    await assert.rejects(r.command(["RESET"]), (e: unknown) => e instanceof RespConnectionError && e.isReset);
  } finally {
    await srv.close();
  }
  await assert.rejects(
    RespConnection.connect("127.0.0.1", srv.port),
    (e: unknown) => e instanceof RespConnectionError && e.code === "ECONNREFUSED",
  );
});
