import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "node:net";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FrameSplitter, StreamNetdev, encodeStreamFrame } from "./stream-netdev.js";

test("frames split from any chunking, byte by byte included; an oversized length is refused", () => {
  const frames = [Buffer.from("a".repeat(60)), Buffer.alloc(0), Buffer.from([1, 2, 3])];
  const wire = Buffer.concat(frames.map(encodeStreamFrame));
  const whole = new FrameSplitter().push(wire);
  assert.deepEqual(whole.map((f) => Buffer.from(f)), frames);
  const s = new FrameSplitter();
  const got: Uint8Array[] = [];
  for (const b of wire) got.push(...s.push(Uint8Array.of(b)));
  assert.deepEqual(got.map((f) => Buffer.from(f)), frames);
  assert.equal(s.pending, 0);
  const big = Buffer.alloc(4);
  big.writeUInt32BE(1 << 24);
  assert.throws(() => new FrameSplitter().push(big), /frame length 16777216 exceeds/);
});

test("a peer on the unix socket: frames both ways, a second peer refused, drops counted while unconnected", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "colo-net-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "net.sock");
  const fromGuest: Buffer[] = [];
  const problems: string[] = [];
  const nd = new StreamNetdev(path, (f) => fromGuest.push(Buffer.from(f)), (m) => problems.push(m));
  await nd.listen();
  nd.send(Buffer.from("early"));
  assert.equal(nd.stats.droppedNotConnected, 1);

  const peer = connect(path);
  await nd.whenConnected();
  const toGuest = new FrameSplitter();
  const received: Buffer[] = [];
  peer.on("data", (c: Buffer) => received.push(...toGuest.push(c).map((f) => Buffer.from(f))));
  peer.write(Buffer.concat([encodeStreamFrame(Buffer.from("hello")), encodeStreamFrame(Buffer.from("world"))]));
  nd.send(Buffer.from("to-guest"));
  await waitFor(() => fromGuest.length === 2 && received.length === 1);
  assert.deepEqual(fromGuest.map(String), ["hello", "world"]);
  assert.deepEqual(received.map(String), ["to-guest"]);

  const second = connect(path);
  await new Promise<void>((resolve) => second.on("close", () => resolve()));
  assert.ok(problems.some((p) => p.includes("second connection")));

  // A broken length from the peer closes its connection and is reported.
  const bad = Buffer.alloc(4);
  bad.writeUInt32BE(0xffffffff);
  peer.write(bad);
  await new Promise<void>((resolve) => peer.on("close", () => resolve()));
  assert.ok(problems.some((p) => p.includes("exceeds")));
  await nd.close();
  assert.equal(existsSync(path), false);
  await nd.close();
});

async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const start = process.hrtime.bigint();
  while (!cond()) {
    if (Number(process.hrtime.bigint() - start) / 1e6 > timeoutMs) throw new Error("condition not met in time");
    await new Promise((r) => setImmediate(r));
  }
}
