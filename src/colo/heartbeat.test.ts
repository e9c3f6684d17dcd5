import { test } from "node:test";
import assert from "node:assert/strict";
import { machineHeader, MemorySink, StreamReader, StreamWriter } from "../state/index.js";
import { HeartbeatSender, SilenceWatchdog, WriteLock } from "./heartbeat.js";
import { monotonicMs } from "../sys/clock.js";
import { steppedWallClock } from "../sys/clock-testing.js";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

test("heartbeats: sent when idle, not while the lock is held, with increasing sequence numbers", async () => {
  const sink = new MemorySink();
  const writer = new StreamWriter(sink, { machine: machineHeader("emu", 16 * 2 ** 20), channel: "back-channel" });
  const lock = new WriteLock();
  const hb = new HeartbeatSender(writer, lock, 20, () => true, (err) => assert.fail(err));
  await new Promise((r) => setTimeout(r, 120));
  const count = async () => {
    const seen: number[] = [];
    const reader = new StreamReader(sink.bytes(), { channel: "back-channel" });
    try {
      for (;;) {
        const rec = await reader.next();
        if (!rec) break;
        if (rec.kind === "heartbeat") seen.push(rec.heartbeat.sequence);
      }
    } catch {
      // the stream has no END yet: reading stops at its end
    }
    return seen;
  };
  const first = await count();
  assert.ok(first.length >= 2, `heartbeats in 120 ms at 20 ms: ${first.length}`);
  assert.deepEqual(first, first.map((_, i) => i), "sequence 0, 1, 2, ...");
  // Held lock (a checkpoint in progress): no heartbeat slips in.
  let release: () => void = () => {};
  const held = lock.run(() => new Promise<void>((r) => (release = r)));
  const during = (await count()).length;
  await new Promise((r) => setTimeout(r, 100));
  assert.equal((await count()).length, during);
  release();
  await held;
  hb.stop();
});

test("silence watchdog: fires once when nothing was heard for the limit; hearing resets it", async () => {
  const { SilenceWatchdog } = await import("./heartbeat.js");
  let fired: number[] = [];
  const w = new SilenceWatchdog(() => 150, (ms) => fired.push(ms), 10);
  for (let i = 0; i < 5; i++) {
    await new Promise((r) => setTimeout(r, 60));
    w.heard();
  }
  assert.deepEqual(fired, [], "heard every 60 ms: never silent for 150 ms");
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(fired.length, 1, "fires once, then stops");
  assert.ok((fired[0] ?? 0) > 150);
  fired = [];
  w.stop();
});

test("SilenceWatchdog: a stall of our own event loop is not the peer's silence when its bytes arrived meanwhile", async () => {
  const dir = mkdtempSync(join(tmpdir(), "colo-wd-"));
  const path = join(dir, "s");
  const server = createServer();
  await new Promise<void>((r) => server.listen(path, r));
  // The peer: another process writing a byte every 50 ms for 2 s, whatever our loop does.
  const peer = spawn(process.execPath, ["-e", `const s=require("net").connect(${JSON.stringify(path)});let n=0;const t=setInterval(()=>{s.write("x");if(++n===40){clearInterval(t);s.end();}},50);`]);
  const socket = await new Promise<Socket>((r) => server.once("connection", r));
  let fired: number | undefined;
  const wd = new SilenceWatchdog(() => 200, (ms) => (fired = ms), 20);
  socket.on("data", () => wd.heard());
  try {
    await new Promise((r) => setTimeout(r, 150));
    // Block our loop for 500 ms, longer than the 200 ms limit, while the peer keeps writing.
    const until = process.hrtime.bigint() + 500_000_000n;
    while (process.hrtime.bigint() < until) {
      // a page compare, a large copy
    }
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(fired, undefined, "the watchdog decided after the poll phase had read the bytes that arrived during the stall");
    // A real silence still fires: the peer stops.
    peer.kill("SIGKILL");
    await new Promise((r) => setTimeout(r, 400));
    assert.ok(fired !== undefined && fired > 200, `fired after ${fired} ms of silence`);
  } finally {
    wd.stop();
    peer.kill("SIGKILL");
    socket.destroy();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("SilenceWatchdog: our own long step is excused, and the window starts afresh after it", async () => {
  let fired: number | undefined;
  const wd = new SilenceWatchdog(() => 100, (ms) => (fired = ms), 10);
  try {
    await wd.excusing(() => new Promise((r) => setTimeout(r, 300)));
    assert.equal(fired, undefined, "300 ms of our own work with a 100 ms limit: not the peer's silence");
    await new Promise((r) => setTimeout(r, 250));
    assert.ok(fired !== undefined && fired > 100, "silence after the step still counts");
  } finally {
    wd.stop();
  }
});

test("SilenceWatchdog: silence is counted on its clock only (a test's own clock here)", async () => {
  let now = 1_000;
  let fired: number | undefined;
  const wd = new SilenceWatchdog(() => 100, (ms) => (fired = ms), 10, () => now);
  try {
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(fired, undefined, "200 ms of real time, none on its clock: no silence");
    now += 100;
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(fired, undefined, "exactly the limit is not past it");
    now += 1;
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(fired, 101);
  } finally {
    wd.stop();
  }
});

test("SilenceWatchdog and HeartbeatSender: a wall-clock step neither fakes a silence nor hides one; neither reads Date", async (t) => {
  const wall = steppedWallClock(t);
  let fired: number | undefined;
  const wd = new SilenceWatchdog(() => 150, (ms) => (fired = ms), 10);
  const sink = new MemorySink();
  const writer = new StreamWriter(sink, { machine: machineHeader("emu", 16 * 2 ** 20), channel: "back-channel" });
  const hb = new HeartbeatSender(writer, new WriteLock(), 20, () => true, (err) => assert.fail(err));
  try {
    for (let i = 0; i < 5; i++) {
      wall.jump(3_600_000); // an hour ahead, again and again
      await new Promise((r) => setTimeout(r, 50));
      wd.heard();
    }
    assert.equal(fired, undefined, "heard every 50 ms: no silence, however far the wall clock went");
    wall.jump(-86_400_000); // a day back: the silence that follows is still seen at its limit
    const silentFrom = monotonicMs();
    while (fired === undefined && monotonicMs() - silentFrom < 1000) await new Promise((r) => setTimeout(r, 10));
    assert.ok(fired !== undefined && fired > 150 && fired < 400, `fired after ${fired} ms of silence`);
    assert.ok(sink.bytes().length > 0, "heartbeats went out meanwhile");
    assert.equal(wall.reads(), 0, "nothing here read the wall clock");
  } finally {
    wd.stop();
    hb.stop();
  }
});
