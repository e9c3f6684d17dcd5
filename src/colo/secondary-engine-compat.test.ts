/**
 * The secondary checks the primary's engine at the start of replication:
 * ENGINE_COMPAT is the primary's first record after VM_CONFIG, and a
 * secondary whose engine cannot load the primary's state refuses it there,
 * before it hashes or copies a disk or takes a page. Driven through the
 * real SecondaryReplicator with a fake engine and an in-memory connection;
 * no VM.
 */
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { test } from "node:test";
import { PAGE_SIZE, type BlockBackend } from "../engine/engine.js";
import { FakeEngine } from "../engine/testing/fake-engine.js";
import { machineHeader, StreamError, StreamReader } from "../state/index.js";
import { writeEngineCompat } from "../state/machine-transfer.js";
import { MemorySink } from "../state/sink.js";
import { StreamWriter } from "../state/writer.js";
import { makeSpillDir, MemoryDisk } from "./disk/testing.js";
import { SecondaryReplicator } from "./secondary.js";
import { fakeSecondaryVm, writeDiskInfoOf } from "./testing.js";

const PAGES = 4;
const KiB = 1024;

async function engine(compatibility: string): Promise<FakeEngine> {
  const e = new FakeEngine({ memoryBytes: PAGES * PAGE_SIZE, kernel: new Uint8Array(0), cmdline: "", disks: [] }, "qemu");
  e.compatibility = compatibility;
  await e.start({ paused: true }); // as migrate-receive --colo starts it before reading on
  return e;
}

/** The primary's start as PrimaryReplicator writes it (after VM_CONFIG): ENGINE_COMPAT, REPLICATION_MODE, DISK_INFO; then the stream stops. */
async function primaryStart(primary: FakeEngine, image: MemoryDisk): Promise<Uint8Array> {
  const forward = new MemorySink();
  const w = new StreamWriter(forward, { machine: machineHeader("qemu", PAGES * PAGE_SIZE) });
  await writeEngineCompat(primary, w);
  await w.writeReplicationMode({ mode: "compare", disks: true });
  await writeDiskInfoOf(w, 0, image);
  return forward.bytes();
}

async function secondaryOf(svm: FakeEngine, forward: Uint8Array, spillDir: string): Promise<{ run: Promise<void>; layer: () => BlockBackend | undefined; sent: Buffer[]; image: MemoryDisk; socket: PassThrough }> {
  const image = new MemoryDisk(256 * KiB);
  let layer: BlockBackend | undefined;
  const vm = fakeSecondaryVm(svm, [{ index: 0, raw: image, spillDir, interpose: (l) => (layer = l) }]);
  const socket = new PassThrough();
  const sent: Buffer[] = [];
  socket.on("data", (c: Buffer) => sent.push(c));
  const secondary = new SecondaryReplicator(vm, socket, new StreamReader(forward), "primary", { timeoutMs: 1000, heartbeatMs: 100, log: () => undefined });
  return { run: secondary.receiveInitial(), layer: () => layer, sent, image, socket };
}

test("secondary: a primary running another QEMU is refused at ENGINE_COMPAT, before any disk is hashed or copied", async (t) => {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const primary = await engine("qemu 7.2.22 pc");
  const forward = await primaryStart(primary, new MemoryDisk(256 * KiB));
  const s = await secondaryOf(await engine("qemu 8.0.0 pc"), forward, spill.dir);
  await assert.rejects(s.run, (err: unknown) => {
    assert.ok(err instanceof StreamError, String(err));
    assert.equal(err.code, "MISMATCH");
    assert.equal(
      err.message,
      "stream offset 16: toolstack record ENGINE_COMPAT (0x80000201): the source runs qemu 7.2.22 pc, this host qemu 8.0.0 pc: a device state from one cannot be loaded by the other",
    );
    return true;
  });
  await new Promise((r) => setImmediate(r));
  assert.equal(s.layer(), undefined, "the disk was not taken over by replication");
  assert.equal(s.image.reads, 0, "the disk was not hashed");
  const back = new StreamReader(Uint8Array.from(Buffer.concat(s.sent)), { channel: "back-channel" });
  assert.equal((await back.next())?.kind, "disk-log", "the back channel's first record, written at once");
  await assert.rejects(back.next(), /ended before its END/, "nothing else was answered on the back channel (no DISK_WANT)");
  s.socket.destroy();
});

test("secondary: a primary running the same QEMU and machine goes on to the disks", async (t) => {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const primary = await engine("qemu 7.2.22 pc");
  const forward = await primaryStart(primary, new MemoryDisk(256 * KiB));
  const s = await secondaryOf(await engine("qemu 7.2.22 pc"), forward, spill.dir);
  // The stream stops after DISK_INFO: the start fails there, after the disk was compared.
  await assert.rejects(s.run, /the stream ended before its END record/);
  assert.ok(s.layer(), "the disk got its replication layer");
  assert.ok(s.image.reads > 0, "the disk was hashed");
  s.socket.destroy();
});
