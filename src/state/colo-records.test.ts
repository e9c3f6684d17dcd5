/**
 * COLO compare-mode and disk records (docs/specs/stream.md §3.8-§3.13):
 * round trips on both channels, their places in the grammar, and the
 * fields a reader rejects.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { PAGE_SIZE } from "../engine/engine.js";
import { readAll, type ReaderOptions } from "./reader.js";
import type { StreamRecord } from "./records.js";
import { MemorySink } from "./sink.js";
import { concatBytes, emuMachine, emuState, rawRecord, rejects, u32s } from "./testing.js";
import { encodeToolstackHeader } from "./toolstack-header.js";
import { allPfns, writePages } from "./write-pages.js";
import { StreamWriter } from "./writer.js";

const PAGES = 4;
const MACHINE = emuMachine(PAGES);
const BACK: ReaderOptions = { channel: "back-channel" };
const FRAME = Uint8Array.from({ length: 60 }, (_, i) => i);

function kinds(records: StreamRecord[]): string[] {
  return records.map((r) => (r.kind === "checkpoint-state" ? r.control : r.kind));
}

/** A forward stream with every COLO record where it belongs. */
async function forward(): Promise<Uint8Array> {
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: MACHINE });
  await w.writeReplicationMode({ mode: "compare", disks: true });
  await w.writeDiskInfo({ disk: 0, chunkSize: 4096, size: 8192, chunkHashes: [createHash("sha256").update("a").digest(), createHash("sha256").update("b").digest()] });
  await w.writeDiskWrite({ disk: 0, seq: 0, offset: 4096, data: new Uint8Array(4096).fill(7) });
  await w.writeMemoryStream();
  await writePages(w, new Uint8Array(PAGES * PAGE_SIZE), allPfns(PAGES));
  await w.writeEngineState(emuState(new Uint8Array(3)));
  await w.writeCheckpoint();
  await w.writeDiskWrite({ disk: 0, seq: 1, offset: 512, data: Uint8Array.of(1, 2, 3) });
  await w.writeDiskCheckpoint({ disk: 0, uptoSeq: 1 });
  await w.writeCheckpointEnd();
  await w.writeNetFrame({ direction: "mirrored-input", frame: FRAME });
  await w.writeDiskWrite({ disk: 0, seq: 2, offset: Number.MAX_SAFE_INTEGER - 1, data: Uint8Array.of(9) });
  await w.writeEnd();
  return sink.bytes();
}

test("forward stream: REPLICATION_MODE, DISK_INFO, DISK_WRITE, DISK_CHECKPOINT and NET_FRAME round trip", async () => {
  const records = await readAll(await forward(), { requireEndOfSource: true });
  assert.deepEqual(kinds(records), [
    "replication-mode", "disk-info", "disk-write", "memory-stream", "machine-header", "page-data", "engine-state", "checkpoint",
    "disk-write", "disk-checkpoint", "checkpoint-end", "net-frame", "disk-write", "end",
  ]);
  const mode = records[0];
  assert.deepEqual(mode?.kind === "replication-mode" ? mode.mode : undefined, { mode: "compare", disks: true });
  const info = records[1];
  assert.equal(info?.kind === "disk-info" ? info.info.chunkHashes.length : -1, 2);
  const writes = records.filter((r) => r.kind === "disk-write").map((r) => (r.kind === "disk-write" ? r.write : undefined));
  assert.deepEqual(writes.map((w) => [w?.seq, w?.offset, w?.data.length]), [[0, 4096, 4096], [1, 512, 3], [2, Number.MAX_SAFE_INTEGER - 1, 1]]);
  const net = records.find((r) => r.kind === "net-frame");
  assert.deepEqual(net?.kind === "net-frame" ? net.net : undefined, { direction: "mirrored-input", frame: FRAME });
});

test("back channel: NET_FRAME (secondary output) and DISK_WANT round trip", async () => {
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: MACHINE, channel: "back-channel" });
  await w.writeDiskWant({ disk: 1, chunks: [0, 5, 1_000_000] });
  await w.writeNetFrame({ direction: "secondary-output", frame: FRAME });
  await w.writeCheckpointState("SVM_READY");
  await w.writeEnd();
  const records = await readAll(sink.bytes(), { ...BACK, requireEndOfSource: true });
  assert.deepEqual(kinds(records), ["disk-want", "net-frame", "SVM_READY", "end"]);
  const want = records[0];
  assert.deepEqual(want?.kind === "disk-want" ? want.want : undefined, { disk: 1, chunks: [0, 5, 1_000_000] });
});

test("writer refuses COLO records out of place before a byte leaves", async () => {
  const w = new StreamWriter(new MemorySink(), { machine: MACHINE });
  await assert.rejects(w.writeNetFrame({ direction: "mirrored-input", frame: FRAME }), /NET_FRAME outside a COLO stream/);
  await assert.rejects(w.writeDiskCheckpoint({ disk: 0, uptoSeq: 0 }), /DISK_CHECKPOINT outside a checkpoint/);
  await assert.rejects(w.writeNetFrame({ direction: "secondary-output", frame: FRAME }), /secondary-output NET_FRAME on the forward stream/);
  await assert.rejects(w.writeDiskWant({ disk: 0, chunks: [] }), /DISK_WANT belongs to the back channel/);
  await assert.rejects(w.writeNetFrame({ direction: "mirrored-input", frame: new Uint8Array(10) }), /a frame of 10 octets/);
  await assert.rejects(w.writeDiskWrite({ disk: 0, seq: 1, offset: 0, data: new Uint8Array(0) }), /0 data octets/);
  await assert.rejects(w.writeDiskWant({ disk: 0, chunks: [3, 3] } as never), /ascending|back channel/);
  const b = new StreamWriter(new MemorySink(), { machine: MACHINE, channel: "back-channel" });
  await assert.rejects(b.writeNetFrame({ direction: "mirrored-input", frame: FRAME }), /mirrored-input NET_FRAME on the back channel/);
  await assert.rejects(b.writeDiskWrite({ disk: 0, seq: 1, offset: 0, data: Uint8Array.of(1) }), /DISK_WRITE on the back channel/);
});

test("reader rejects bad COLO record fields, naming the record", async () => {
  const head = encodeToolstackHeader();
  await rejects(concatBytes(head, rawRecord(0x101, u32s(3, 0))), "BAD_FIELD", { message: /REPLICATION_MODE.*unknown mode 3/ });
  await rejects(concatBytes(head, rawRecord(0x101, u32s(2, 0x80))), "BAD_RESERVED", { message: /unknown flags 0x80/ });
  await rejects(concatBytes(head, rawRecord(0x101, u32s(2, 0)), rawRecord(0x101, u32s(2, 0))), "OUT_OF_ORDER", { message: /a second REPLICATION_MODE/ });
  // NET_FRAME whose frame_length disagrees with the body.
  await rejects(concatBytes(head, rawRecord(0x102, concatBytes(u32s(2, 61), FRAME))), "BAD_LENGTH", { message: /frame_length 61/, reader: BACK });
  await rejects(concatBytes(head, rawRecord(0x102, concatBytes(u32s(9, 60), FRAME))), "BAD_FIELD", { message: /unknown direction 9/, reader: BACK });
  // DISK_WRITE with a non-zero reserved field, and with a disk index out of range.
  const dw = (disk: number, reserved: number) => rawRecord(0x103, concatBytes(u32s(disk, reserved, 1, 0, 0, 0), Uint8Array.of(1)));
  await rejects(concatBytes(head, dw(0, 1)), "BAD_RESERVED", { message: /reserved field reserved is not zero/ });
  await rejects(concatBytes(head, dw(64, 0)), "BAD_FIELD", { message: /disk index 64/ });
  // DISK_INFO whose hash count does not fit its size.
  await rejects(concatBytes(head, rawRecord(0x105, concatBytes(u32s(0, 4096, 8192, 0), new Uint8Array(32)))), "BAD_FIELD", { message: /1 chunk hashes for 2 chunks/ });
  await rejects(concatBytes(head, rawRecord(0x105, concatBytes(u32s(0, 1000, 1000, 0), new Uint8Array(32)))), "BAD_FIELD", { message: /chunk_size 1000/ });
  // DISK_WANT not ascending, and with a count that does not fit.
  await rejects(concatBytes(head, rawRecord(0x106, u32s(0, 2, 5, 5))), "BAD_FIELD", { message: /strictly ascending/, reader: BACK });
  await rejects(concatBytes(head, rawRecord(0x106, u32s(0, 3, 5, 6))), "BAD_LENGTH", { message: /count 3/, reader: BACK });
  // DISK_CHECKPOINT outside a checkpoint.
  await rejects(concatBytes(head, rawRecord(0x104, u32s(0, 0, 1, 0))), "OUT_OF_ORDER", { message: /DISK_CHECKPOINT outside a checkpoint/ });
});

test("reader: REPLICATION_MODE and DISK_INFO only before the first MEMORY_STREAM; NET_FRAME not inside an open checkpoint", async () => {
  const bytes = await forward();
  const records = await readAll(bytes);
  // Cut the stream right after CHECKPOINT (checkpoint 0 open) and append a NET_FRAME: rejected.
  const cp = records.find((r) => r.kind === "checkpoint");
  const afterCheckpoint = (cp?.offset ?? 0) + 8;
  const net = rawRecord(0x102, concatBytes(u32s(1, 60), FRAME));
  await rejects(concatBytes(bytes.subarray(0, afterCheckpoint), net), "OUT_OF_ORDER", { message: /NET_FRAME while a checkpoint awaits its CHECKPOINT_END/ });
  const ce = records.find((r) => r.kind === "checkpoint-end");
  const afterEnd = (ce?.offset ?? 0) + 8;
  await rejects(concatBytes(bytes.subarray(0, afterEnd), rawRecord(0x101, u32s(1, 0))), "OUT_OF_ORDER", { message: /REPLICATION_MODE after the first MEMORY_STREAM/ });
  await rejects(
    concatBytes(bytes.subarray(0, afterEnd), rawRecord(0x105, concatBytes(u32s(0, 4096, 4096, 0), new Uint8Array(32)))),
    "OUT_OF_ORDER",
    { message: /DISK_INFO after the first MEMORY_STREAM/ },
  );
});

test("CHECKPOINT_REQUEST: back channel only, wherever a control message may come; its fields are checked both ways", async () => {
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: MACHINE, channel: "back-channel" });
  await w.writeCheckpointRequest({ reason: "disk-backlog", disk: 1 }); // before the first control message
  await w.writeCheckpointState("SVM_READY");
  await w.writeNetFrame({ direction: "secondary-output", frame: FRAME });
  await w.writeCheckpointRequest({ reason: "disk-backlog", disk: 63 });
  await w.writeCheckpointState("SVM_SUSPENDED");
  await w.writeEnd();
  const records = await readAll(sink.bytes(), { ...BACK, requireEndOfSource: true });
  assert.deepEqual(kinds(records), ["checkpoint-request", "SVM_READY", "net-frame", "checkpoint-request", "SVM_SUSPENDED", "end"]);
  const requests = records.flatMap((r) => (r.kind === "checkpoint-request" ? [r.request] : []));
  assert.deepEqual(requests, [
    { reason: "disk-backlog", disk: 1 },
    { reason: "disk-backlog", disk: 63 },
  ]);

  const forwardWriter = new StreamWriter(new MemorySink(), { machine: MACHINE });
  await assert.rejects(forwardWriter.writeCheckpointRequest({ reason: "disk-backlog", disk: 0 }), /CHECKPOINT_REQUEST belongs to the back channel/);
  const back = new StreamWriter(new MemorySink(), { machine: MACHINE, channel: "back-channel" });
  await assert.rejects(back.writeCheckpointRequest({ reason: "disk-backlog", disk: 64 }), /disk index 64/);

  const head = encodeToolstackHeader();
  await rejects(concatBytes(head, rawRecord(0x107, u32s(1, 0))), "OUT_OF_ORDER", { message: /CHECKPOINT_REQUEST belongs to the back channel/ });
  await rejects(concatBytes(head, rawRecord(0x107, u32s(2, 0))), "BAD_FIELD", { message: /CHECKPOINT_REQUEST.*unknown reason 2/, reader: BACK });
  await rejects(concatBytes(head, rawRecord(0x107, u32s(1, 64))), "BAD_FIELD", { message: /disk index 64/, reader: BACK });
  await rejects(concatBytes(head, rawRecord(0x107, u32s(1, 0, 0, 0))), "BAD_LENGTH", { message: /CHECKPOINT_REQUEST/, reader: BACK });
  await rejects(concatBytes(head, rawRecord(0x8000_0107, u32s(1, 0))), "UNKNOWN_RECORD", { message: /shadows the mandatory CHECKPOINT_REQUEST/, reader: BACK });
});
