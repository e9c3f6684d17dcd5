import { test } from "node:test";
import assert from "node:assert/strict";
import { machineHeader, MemorySink, StreamReader, StreamWriter } from "../state/index.js";
import { HeartbeatSender, WriteLock } from "./heartbeat.js";

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
