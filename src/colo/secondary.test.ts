/**
 * The secondary's disk backlog reaches the primary: once the replication
 * data it holds for a disk passes its limit, the secondary asks for a
 * checkpoint on the back channel (CHECKPOINT_REQUEST), once until a
 * checkpoint comes. Driven through the real SecondaryReplicator, with a
 * fake engine and an in-memory connection; no VM.
 */
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { test } from "node:test";
import { FakeEngine } from "../engine/testing/fake-engine.js";
import { PAGE_SIZE, type BlockBackend } from "../engine/engine.js";
import { StreamError, StreamReader, type StreamRecord } from "../state/index.js";
import { MemorySink } from "../state/sink.js";
import { emuMachine } from "../state/testing.js";
import { StreamWriter } from "../state/writer.js";
import { makeSpillDir, MemoryDisk } from "./disk/testing.js";
import { SecondaryReplicator } from "./secondary.js";
import { fakeSecondaryVm, writeDiskInfoOf } from "./testing.js";

const PAGES = 4;
const KiB = 1024;

/** Every record in `bytes` (a back channel cut off before its END). */
async function backChannelRecords(bytes: Uint8Array): Promise<StreamRecord[]> {
  const reader = new StreamReader(bytes, { channel: "back-channel" });
  const records: StreamRecord[] = [];
  for (;;) {
    try {
      const r = await reader.next();
      if (!r) return records;
      records.push(r);
    } catch (err) {
      if (err instanceof StreamError && err.code === "TRUNCATED") return records;
      throw err;
    }
  }
}

test("secondary: a disk backlog past its limit asks the primary for a checkpoint, once until one comes", async (t) => {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const image = new MemoryDisk(256 * KiB);
  let layer: BlockBackend | undefined;
  const engine = new FakeEngine({ memoryBytes: PAGES * PAGE_SIZE, kernel: new Uint8Array(0), cmdline: "", disks: [] });
  const vm = fakeSecondaryVm(engine, [{ index: 0, raw: image, spillDir: spill.dir, interpose: (l) => (layer = l) }]);

  // The primary's side of the start: mode, the disk's hashes, then writes that pile up before checkpoint 0.
  const forward = new MemorySink();
  const w = new StreamWriter(forward, { machine: emuMachine(PAGES) });
  await w.writeReplicationMode({ mode: "compare", disks: true });
  await writeDiskInfoOf(w, 0, image);
  for (let seq = 1; seq <= 10; seq++) await w.writeDiskWrite({ disk: 0, seq, offset: (seq - 1) * 16 * KiB, data: new Uint8Array(16 * KiB).fill(seq) });

  const socket = new PassThrough();
  const sent: Buffer[] = [];
  socket.on("data", (c: Buffer) => sent.push(c));
  const secondary = new SecondaryReplicator(vm, socket, new StreamReader(forward.bytes()), "primary", {
    timeoutMs: 1000,
    heartbeatMs: 100,
    log: () => undefined,
    diskBacklogLimitBytes: 64 * KiB,
  });
  // The stream stops before the memory image: the start fails, after the writes were taken.
  await assert.rejects(secondary.receiveInitial(), /closed the stream before the memory image|ended/);
  await new Promise((r) => setImmediate(r));
  assert.ok(layer, "the disk got its replication layer");

  const records = await backChannelRecords(Uint8Array.from(Buffer.concat(sent)));
  assert.deepEqual(
    records.map((r) => r.kind),
    ["disk-log", "disk-want", "checkpoint-request"],
    "DISK_LOG first, then one request for ten writes of 16 KiB over a 64 KiB limit",
  );
  const request = records[2];
  assert.deepEqual(request?.kind === "checkpoint-request" ? request.request : undefined, { reason: "disk-backlog", disk: 0 });
  assert.equal(secondary.details().checkpointRequests, 1);
  socket.destroy();
});
