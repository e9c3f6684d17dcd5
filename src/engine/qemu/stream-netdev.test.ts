import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { FrameSplitter, StreamNetdev, encodeStreamFrame } from "./stream-netdev.js";
import { SentFrames } from "./sent-frames.js";

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

test("QEMU's end of the socketpair: frames both ways; unread() names the frames QEMU has not read in full", async () => {
  const fromGuest: Buffer[] = [];
  const problems: string[] = [];
  const nd = new StreamNetdev("test NIC", (f) => fromGuest.push(Buffer.from(f)), (m) => problems.push(m));
  const a = Buffer.alloc(60, 0xaa);
  const b = Buffer.alloc(10, 0xbb);
  const c = Buffer.alloc(5, 0xcc);
  for (const f of [a, b, c]) nd.send(f);
  await waitFor(() => nd.unread().length === 3);
  assert.deepEqual(nd.unread().map((f) => Buffer.from(f)), [a, b, c]);

  // A reader takes 70 of the 87 bytes on the wire (A: 64, B: 14, C: 9): B is half read, so B and C are unread.
  const reader = spawn("sh", ["-c", "dd bs=70 count=1 of=/dev/null status=none <&3 && printf '\\000\\000\\000\\005hello' >&3"], {
    stdio: ["ignore", "ignore", "inherit", nd.qemuFd],
  });
  const code = await new Promise<number | null>((resolve) => reader.on("exit", (c) => resolve(c)));
  assert.equal(code, 0);
  assert.deepEqual(nd.unread().map((f) => Buffer.from(f)), [b, c]);
  await waitFor(() => fromGuest.length === 1);
  assert.deepEqual(fromGuest.map(String), ["hello"]);
  assert.equal(nd.stats.framesToGuest, 3);
  assert.equal(nd.stats.framesFromGuest, 1);
  assert.deepEqual(problems, []);

  await nd.close();
  assert.equal(nd.connected, false);
  assert.deepEqual(nd.unread(), []);
  nd.send(Buffer.from("late"));
  assert.equal(nd.stats.droppedClosed, 1);
  await nd.close();
});

test("a broken length from QEMU closes the stream and is reported", async () => {
  const problems: string[] = [];
  const nd = new StreamNetdev("test NIC", () => undefined, (m) => problems.push(m));
  const writer = spawn("sh", ["-c", "printf '\\377\\377\\377\\377' >&3"], { stdio: ["ignore", "ignore", "inherit", nd.qemuFd] });
  await new Promise((resolve) => writer.on("exit", resolve));
  await waitFor(() => problems.length > 0);
  assert.match(problems[0] ?? "", /test NIC: frame length 4294967295 exceeds/);
  assert.equal(nd.connected, false);
  await nd.close();
});

test("SentFrames: the unread suffix by wire bytes, bounded, overflow counted", () => {
  const log = new SentFrames(100);
  const f = (n: number) => Uint8Array.of(n);
  for (const n of [1, 2, 3]) log.push(f(n), 40);
  assert.equal(log.heldBytes, 120); // dropping frame 1 would leave 80 < 100: kept
  log.push(f(4), 40);
  assert.equal(log.heldBytes, 120); // 160: frame 1 goes, frames 2-4 remain
  assert.deepEqual(log.unread(0), []);
  assert.deepEqual(log.unread(1).map((x) => x[0]), [4]);
  assert.deepEqual(log.unread(40).map((x) => x[0]), [4]);
  assert.deepEqual(log.unread(41).map((x) => x[0]), [3, 4]);
  assert.equal(log.overflows, 0);
  assert.deepEqual(log.unread(10_000).map((x) => x[0]), [2, 3, 4]);
  assert.equal(log.overflows, 1);
});

test("SentFrames: many small frames (the forgotten ones dropped in bulk) keep the newest within the bound, in order", () => {
  const log = new SentFrames(1000);
  for (let n = 0; n < 50_000; n++) log.push(Uint8Array.of(n & 0xff, n >> 8), 10);
  assert.equal(log.heldBytes, 1000);
  const all = log.unread(1000);
  assert.equal(all.length, 100);
  assert.deepEqual([...(all[0] as Uint8Array)], [(49_900 & 0xff), 49_900 >> 8]);
  assert.deepEqual([...(all[99] as Uint8Array)], [(49_999 & 0xff), 49_999 >> 8]);
  assert.equal(log.unread(5000).length, 100);
  assert.equal(log.overflows, 1);
});

async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const start = process.hrtime.bigint();
  while (!cond()) {
    if (Number(process.hrtime.bigint() - start) / 1e6 > timeoutMs) throw new Error("condition not met in time");
    await new Promise((r) => setImmediate(r));
  }
}
