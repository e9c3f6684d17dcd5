/**
 * DISK_PLAN, DISK_LOG and DISK_SYNCED (docs/specs/stream.md §3.16-§3.18):
 * round trips through the writer and reader, their places (DISK_PLAN
 * forward before the memory; DISK_LOG the back channel's first record;
 * DISK_SYNCED back channel) and every field a reader rejects.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { DiskLogReport } from "./disk-log-records.js";
import { readAll, StreamReader } from "./reader.js";
import { MemorySink } from "./sink.js";
import { coloForwardStream, concatBytes, emuMachine, rawRecord, rejects, u32s } from "./testing.js";
import { encodeToolstackHeader } from "./toolstack-header.js";
import { StreamWriter } from "./writer.js";

const DISK_PLAN = 0x8000_0109;
const DISK_LOG = 0x8000_010a;
const DISK_SYNCED = 0x8000_010b;
const MiB = 2 ** 20;
const BACK = { reader: { channel: "back-channel" as const } };
const lineage = (n: number): Uint8Array => new Uint8Array(16).fill(n);

/** The first record of a stream that need not be complete. */
async function firstRecord(bytes: Uint8Array, channel: "image" | "back-channel") {
  return new StreamReader(bytes, { channel }).next();
}

const REPORT: DiskLogReport = {
  lineage: lineage(7),
  disks: [
    { disk: 0, flags: 1, lineage: lineage(3), kind: 3, chunkSize: MiB, seq: 41, size: 10 * MiB, chunks: [0, 4, 9] },
    { disk: 1, flags: 0, lineage: new Uint8Array(16), kind: 0, chunkSize: 0, seq: 0, size: 0, chunks: [] },
    { disk: 3, flags: 1, lineage: lineage(3), kind: 2, chunkSize: 4096, seq: 0, size: 8192, chunks: [] },
  ],
};

async function backChannel(report: DiskLogReport): Promise<Uint8Array> {
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: emuMachine(2), channel: "back-channel" });
  await w.writeDiskLog(report);
  await w.writeDiskWant({ disk: 0, chunks: [0, 4] });
  await w.writeDiskSynced({ checkpoint: 0 });
  await w.writeCheckpointState("SVM_READY");
  await w.writeDiskSynced({ checkpoint: 2 ** 40 });
  await w.writeEnd();
  return sink.bytes();
}

test("DISK_LOG and DISK_SYNCED: round trip on the back channel, DISK_LOG first", async () => {
  const records = await readAll(await backChannel(REPORT), { channel: "back-channel", requireEndOfSource: true });
  const log = records[0];
  assert.ok(log?.kind === "disk-log");
  assert.deepEqual(log.report, REPORT);
  assert.deepEqual(records.flatMap((r) => (r.kind === "disk-synced" ? [r.synced.checkpoint] : [])), [0, 2 ** 40]);
  const none = await readAll(await backChannel({ lineage: lineage(1), disks: [] }), { channel: "back-channel" });
  assert.ok(none[0]?.kind === "disk-log" && none[0].report.disks.length === 0, "zero disks: still sent");
});

test("DISK_PLAN: round trip on the forward stream before the memory, instead of DISK_INFO", async () => {
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: emuMachine(2) });
  await w.writeReplicationMode({ mode: "remus", disks: true });
  await w.writeDiskPlan({ disk: 2, chunkSize: MiB, size: 3 * MiB + 5, chunks: [0, 3] });
  await w.writeDiskPlan({ disk: 3, chunkSize: 4096, size: 4096, chunks: [] });
  const reader = new StreamReader(sink.bytes());
  const records = [await reader.next(), await reader.next(), await reader.next()];
  assert.deepEqual(records.flatMap((r) => (r?.kind === "disk-plan" ? [r.plan] : [])), [
    { disk: 2, chunkSize: MiB, size: 3 * MiB + 5, chunks: [0, 3] },
    { disk: 3, chunkSize: 4096, size: 4096, chunks: [] },
  ]);
});

test("DISK_PLAN, DISK_LOG, DISK_SYNCED: where each may come", async () => {
  const head = encodeToolstackHeader();
  const plan = rawRecord(DISK_PLAN, concatBytes(u32s(0, 4096, 4096, 0, 0, 0)));
  const log = rawRecord(DISK_LOG, concatBytes(lineage(1), u32s(0, 0)));
  const synced = rawRecord(DISK_SYNCED, u32s(5, 0));
  const heartbeat = rawRecord(0x100, u32s(0, 0, 0, 0));
  await rejects(concatBytes(head, plan), "OUT_OF_ORDER", { message: /DISK_PLAN on the back channel/, ...BACK });
  await rejects(concatBytes(head, log), "OUT_OF_ORDER", { message: /DISK_LOG belongs to the back channel/ });
  await rejects(concatBytes(head, synced), "OUT_OF_ORDER", { message: /DISK_SYNCED belongs to the back channel/ });
  await rejects(concatBytes(head, heartbeat, log), "OUT_OF_ORDER", { message: /DISK_LOG after another record/, ...BACK });
  await rejects(concatBytes(head, log, log), "OUT_OF_ORDER", { message: /DISK_LOG after another record/, ...BACK });
  const colo = await coloForwardStream(new Uint8Array(2 * 4096), 0);
  const end = (await readAll(colo)).find((r) => r.kind === "checkpoint-end");
  await rejects(concatBytes(colo.subarray(0, (end?.offset ?? 0) + 8), plan), "OUT_OF_ORDER", { message: /DISK_PLAN after the first MEMORY_STREAM/ });
});

test("DISK_PLAN: the reader rejects bad fields, reserved octets and lengths", async () => {
  const head = encodeToolstackHeader();
  const p = (...v: number[]): Uint8Array => concatBytes(head, rawRecord(DISK_PLAN, u32s(...v)));
  await rejects(p(0, 4096, 8192, 0, 2, 0, 1, 1), "BAD_FIELD", { message: /DISK_PLAN.*chunk index 1 after 1/ });
  await rejects(p(0, 4096, 8192, 0, 1, 0, 2), "BAD_FIELD", { message: /chunk index 2 outside 0..1/ });
  await rejects(p(0, 4096, 8192, 0, 3, 0, 0, 1, 1), "BAD_FIELD", { message: /3 chunk indexes for 2 chunks/ });
  await rejects(p(0, 1000, 8192, 0, 0, 0), "BAD_FIELD", { message: /chunk_size 1000/ });
  await rejects(p(0, 4096, 0, 0, 0, 0), "BAD_FIELD", { message: /size 0/ });
  await rejects(p(0, 4096, 0, 0x20_0000, 0, 0), "BAD_FIELD", { message: /2\^53 or more/ });
  await rejects(p(64, 4096, 4096, 0, 0, 0), "BAD_FIELD", { message: /disk index 64/ });
  await rejects(p(0, 4096, 0, 0x1000, 0, 0), "BAD_FIELD", { message: /chunks, at most 1048576/ });
  await rejects(p(0, 4096, 4096, 0, 0, 9), "BAD_RESERVED", { message: /reserved field is not zero/ });
  await rejects(p(0, 4096, 4096, 0, 2, 0, 0), "BAD_LENGTH", { message: /count 2 needs 32 octets, the body has 28/ });
  await rejects(p(0, 4096, 4096, 0), "BAD_LENGTH", { message: /DISK_PLAN/ });
});

test("DISK_LOG: the reader rejects bad fields, reserved octets, padding and lengths", async () => {
  const head = encodeToolstackHeader();
  const entry = (o: { disk?: number; flags?: number; lin?: number; kind?: number; chunk?: number; seq?: number; size?: number; chunks?: number[]; count?: number; reserved?: number; pad?: number }): Uint8Array => {
    const chunks = o.chunks ?? [];
    const count = o.count ?? chunks.length;
    return concatBytes(
      u32s(o.disk ?? 0, o.flags ?? 1),
      lineage(o.lin ?? 3),
      u32s(o.kind ?? 1, o.chunk ?? 4096, o.seq ?? 0, 0, o.size ?? 8192, 0, count, o.reserved ?? 0),
      u32s(...chunks),
      chunks.length % 2 === 1 ? u32s(o.pad ?? 0) : new Uint8Array(0),
    );
  };
  const log = (count: number, ...entries: Uint8Array[]): Uint8Array => concatBytes(head, rawRecord(DISK_LOG, concatBytes(lineage(9), u32s(count, 0), ...entries)));
  assert.equal((await firstRecord(log(1, entry({ chunks: [1] })), "back-channel"))?.kind, "disk-log", "a well-formed entry is accepted");
  await rejects(concatBytes(head, rawRecord(DISK_LOG, concatBytes(lineage(9), u32s(0, 1)))), "BAD_RESERVED", { message: /DISK_LOG.*reserved/, ...BACK });
  await rejects(log(65), "BAD_FIELD", { message: /disk_count 65/, ...BACK });
  await rejects(log(1, entry({ reserved: 1 })), "BAD_RESERVED", { message: /entry 0: reserved/, ...BACK });
  await rejects(log(1, entry({ chunks: [1], pad: 1 })), "BAD_RESERVED", { message: /entry 0: the padding/, ...BACK });
  await rejects(log(2, entry({})), "BAD_LENGTH", { message: /ends inside entry 1's header/, ...BACK });
  await rejects(log(1, entry({ count: 2 })), "BAD_LENGTH", { message: /entry 0 names 2 chunks/, ...BACK });
  await rejects(log(0, entry({})), "BAD_LENGTH", { message: /56 octets after the last entry/, ...BACK });
  await rejects(log(1, entry({ seq: 2 ** 31, size: 8192 }).map((b, i) => (i === 36 ? 0x00 : i === 39 ? 0x80 : b))), "BAD_FIELD", { message: /seq or size is 2\^53/, ...BACK });
  await rejects(log(1, entry({ disk: 64 })), "BAD_FIELD", { message: /disk index 64/, ...BACK });
  await rejects(log(2, entry({ disk: 1 }), entry({ disk: 1 })), "BAD_FIELD", { message: /disk 1 after disk 1/, ...BACK });
  await rejects(log(1, entry({ flags: 0 })), "BAD_FIELD", { message: /no log \(flags bit 0 clear\) but/, ...BACK });
  await rejects(log(1, entry({ kind: 4 })), "BAD_FIELD", { message: /unknown log kind 4/, ...BACK });
  await rejects(log(1, entry({ chunk: 100 })), "BAD_FIELD", { message: /chunk_size 100/, ...BACK });
  await rejects(log(1, entry({ size: 0 })), "BAD_FIELD", { message: /size 0/, ...BACK });
  await rejects(log(1, entry({ chunks: [2, 1] })), "BAD_FIELD", { message: /chunk index 2 outside 0..1/, ...BACK });
  await rejects(log(1, entry({ chunks: [1, 1] })), "BAD_FIELD", { message: /chunk index 1 after 1/, ...BACK });
  const later = await firstRecord(log(1, entry({ flags: 0x3 })), "back-channel");
  assert.ok(later?.kind === "disk-log" && later.report.disks[0]?.flags === 3, "flags of later revisions are the primary's to judge, not the reader's");
});

test("DISK_SYNCED: the reader rejects a checkpoint of 2^53 or more and a wrong length", async () => {
  const head = encodeToolstackHeader();
  await rejects(concatBytes(head, rawRecord(DISK_SYNCED, u32s(0, 0x20_0000))), "BAD_FIELD", { message: /DISK_SYNCED.*2\^53 or more/, ...BACK });
  await rejects(concatBytes(head, rawRecord(DISK_SYNCED, u32s(0, 0, 0, 0))), "BAD_LENGTH", { message: /DISK_SYNCED/, ...BACK });
  const w = new StreamWriter(new MemorySink(), { machine: emuMachine(2), channel: "back-channel" });
  await assert.rejects(w.writeDiskSynced({ checkpoint: -1 }), /checkpoint -1/);
});
