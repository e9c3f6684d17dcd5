import assert from "node:assert/strict";
import { PassThrough, Readable } from "node:stream";
import { test } from "node:test";
import { PAGE_SIZE } from "../engine/engine.js";
import { EMULATOR_ID } from "./emulator-context.js";
import { applyPageData } from "./page-data.js";
import { PageBuffer } from "./page-buffer.js";
import { PAGE_TYPE } from "./pfn-entry.js";
import { unionSortedPfns } from "./pfn-list.js";
import { readAll, StreamReader } from "./reader.js";
import type { StreamRecord } from "./records.js";
import { MemorySink, writableSink } from "./sink.js";
import {
  asyncChunks,
  concatBytes,
  emuMachine,
  emuState,
  randomBytes,
  randomChunks,
  SAMPLE_VM_CONFIG,
  sampleRam,
  saveStream,
  seededRandom,
} from "./testing.js";
import { allPfns, writePages } from "./write-pages.js";
import { StreamWriter } from "./writer.js";

function kinds(records: StreamRecord[]): string[] {
  return records.map((r) => r.kind);
}

function only<K extends StreamRecord["kind"]>(records: StreamRecord[], kind: K): Extract<StreamRecord, { kind: K }>[] {
  return records.filter((r): r is Extract<StreamRecord, { kind: K }> => r.kind === kind);
}

test("save stream: header, pages, EMU_STATE, END round trip and rebuild RAM exactly", async () => {
  const random = seededRandom(1);
  const pages = 2500; // three PAGE_DATA records: 1024 + 1024 + 452
  const ram = sampleRam(random, pages, 0.4);
  const state = randomBytes(random, 12345);
  const bytes = await saveStream(ram, state);
  assert.equal(bytes.length % 8, 0);

  const records = await readAll(bytes, { expect: { engineId: "emu", memoryBytes: ram.length, vcpuCount: 1 }, requireEndOfSource: true });
  assert.deepEqual(kinds(records), ["memory-stream", "machine-header", "page-data", "page-data", "page-data", "engine-state", "memory-end", "end"]);
  const [header] = only(records, "machine-header");
  assert.deepEqual(header?.machine, { engineId: "emu", memoryBytes: pages * PAGE_SIZE, vcpuCount: 1, pageCount: pages });
  assert.deepEqual(
    only(records, "page-data").map((r) => r.pages.pfns.length),
    [1024, 1024, 452],
  );

  const restored = new Uint8Array(ram.length).fill(0xcc); // zero pages must be zeroed, not left alone
  for (const r of only(records, "page-data")) applyPageData(r.pages, restored);
  assert.deepEqual(restored, ram);
  const [engine] = only(records, "engine-state");
  assert.equal(engine?.state.engineId, "emu");
  assert.equal(engine?.state.formatVersion, 1);
  assert.deepEqual(engine?.state.blob, state);
});

test("VM_CONFIG round trips before the memory part, in any chunking: path and text exactly, BOM and CRLF kept", async () => {
  const random = seededRandom(11);
  const ram = sampleRam(random, 40);
  const bytes = await saveStream(ram, new Uint8Array([9]), SAMPLE_VM_CONFIG);
  const configs = [SAMPLE_VM_CONFIG, { path: "/\u00e9".repeat(1365) + "p", text: "\ufeffname = 'g'\r\n" + "\u{1f5a5}".repeat(16380) + "x" }];
  for (const config of configs) {
    const sink = new MemorySink();
    const writer = new StreamWriter(sink, { machine: emuMachine(40) });
    await writer.writeVmConfig(config);
    await writer.writeMemoryStream();
    await writePages(writer, ram, allPfns(40));
    await writer.writeEngineState(emuState(new Uint8Array([9])));
    await writer.writeMemoryEnd();
    await writer.writeEnd();
    if (config === SAMPLE_VM_CONFIG) assert.deepEqual(sink.bytes(), bytes);
    for (const source of [sink.bytes(), asyncChunks(randomChunks(sink.bytes(), random, 7))]) {
      const records = await readAll(source, { requireEndOfSource: true });
      assert.deepEqual(kinds(records).slice(0, 3), ["vm-config", "memory-stream", "machine-header"]);
      assert.deepEqual(records[0], { kind: "vm-config", offset: 16, config: { format: 1, path: config.path, text: config.text } });
    }
  }
  assert.equal(new TextEncoder().encode(configs[1]?.path).length, 4096);
  assert.equal(new TextEncoder().encode(configs[1]?.text).length, 65536);
});

test("zero pages travel as a type: 4096 zero pages cost 8 octets each, not 4096", async () => {
  const pages = 4096; // 16 MiB of zeros
  const bytes = await saveStream(new Uint8Array(pages * PAGE_SIZE), new Uint8Array(1));
  // headers (16 + 8 + 40) + 4 PAGE_DATA records of 1024 entries + EMU_STATE + 2 ENDs
  assert.ok(bytes.length < 40 * 1024, `stream of ${bytes.length} octets for 16 MiB of zero pages`);
  const records = await readAll(bytes);
  for (const r of only(records, "page-data")) {
    assert.ok(r.pages.types.every((t) => t === PAGE_TYPE.ZERO));
    assert.equal(r.pages.data.length, 0);
  }
});

test("writePages reports pages, zero pages, records and bytes", async () => {
  const random = seededRandom(2);
  const machine = emuMachine(3000);
  const ram = sampleRam(random, 3000, 0.5);
  let expectedZero = 0;
  for (let pfn = 0; pfn < 3000; pfn++) if (ram.subarray(pfn * PAGE_SIZE, (pfn + 1) * PAGE_SIZE).every((b) => b === 0)) expectedZero++;
  const sink = new MemorySink();
  const writer = new StreamWriter(sink, { machine });
  await writer.writeMemoryStream();
  const before = writer.bytesWritten;
  const stats = await writePages(writer, ram, allPfns(3000));
  assert.equal(stats.pages, 3000);
  assert.equal(stats.zeroPages, expectedZero);
  assert.equal(stats.records, 3);
  assert.equal(stats.bytes, writer.bytesWritten - before);
  assert.equal(stats.bytes, 3 * 16 + 3000 * 8 + (3000 - expectedZero) * PAGE_SIZE);
});

test("live migration: pre-copy rounds, the final round and state; later pages win", async () => {
  const random = seededRandom(3);
  const machine = emuMachine(300);
  const ram = sampleRam(random, 300);
  const sink = new MemorySink();
  const writer = new StreamWriter(sink, { machine });
  await writer.writeMemoryStream();
  await writer.writePrecopyRound({ round: 0, final: false, pageCount: 300 });
  await writePages(writer, ram, allPfns(300));
  // The guest dirties some pages during round 0.
  const dirty = [3, 17, 200, 299];
  for (const pfn of dirty) ram.set(randomBytes(random, PAGE_SIZE), pfn * PAGE_SIZE);
  ram.fill(0, 50 * PAGE_SIZE, 51 * PAGE_SIZE);
  dirty.push(50);
  dirty.sort((a, b) => a - b);
  await writer.writePrecopyRound({ round: 1, final: true, pageCount: dirty.length });
  await writePages(writer, ram, dirty);
  await writer.writeEngineState(emuState(new Uint8Array([1, 2, 3])));
  await writer.writeMemoryEnd();
  await writer.writeEnd();

  const records = await readAll(asyncChunks(randomChunks(sink.bytes(), random, 5000)), { expect: { engineId: "emu", memoryBytes: ram.length } });
  assert.deepEqual(
    only(records, "precopy-round").map((r) => r.round),
    [
      { round: 0, final: false, pageCount: 300 },
      { round: 1, final: true, pageCount: 5 },
    ],
  );
  const restored = new Uint8Array(ram.length);
  for (const r of only(records, "page-data")) applyPageData(r.pages, restored);
  assert.deepEqual(restored, ram);
});

test("COLO forward stream: initial sync, checkpoints with NEW, EMULATOR_CONTEXT, CHECKPOINT_END", async () => {
  const random = seededRandom(4);
  const machine = emuMachine(64);
  const pvm = sampleRam(random, 64);
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine });
  await w.writeMemoryStream();
  await writePages(w, pvm, allPfns(64));
  await w.writeEngineState(emuState(randomBytes(random, 100)));
  await w.writeCheckpoint();
  await w.writeEmulatorContext({ emulatorId: EMULATOR_ID.COLO_VMM, index: 0, context: new Uint8Array([9, 9, 9]) });
  await w.writeCheckpointEnd();
  const checkpoints: number[][] = [[1, 5, 9], [0, 63]];
  for (const pfns of checkpoints) {
    for (const pfn of pfns) pvm.set(randomBytes(random, PAGE_SIZE), pfn * PAGE_SIZE);
    await w.writeCheckpointState("NEW");
    await w.writeMemoryStream();
    await writePages(w, pvm, pfns);
    await w.writeEngineState(emuState(randomBytes(random, 100)));
    await w.writeCheckpoint();
    await w.writeCheckpointEnd();
  }
  await w.writeEnd();

  // The secondary buffers each checkpoint and applies it at CHECKPOINT_END.
  const svm = new Uint8Array(pvm.length);
  const buffer = new PageBuffer(64);
  const seen: string[] = [];
  for await (const r of new StreamReader(sink.bytes(), { expect: { engineId: "emu", memoryBytes: pvm.length } })) {
    seen.push(r.kind === "checkpoint-state" ? `state:${r.control}` : r.kind);
    if (r.kind === "page-data") buffer.add(r.pages);
    if (r.kind === "emulator-context") assert.deepEqual([...r.context.context], [9, 9, 9]);
    if (r.kind === "checkpoint-end") buffer.applyTo(svm);
  }
  assert.deepEqual(seen, [
    "memory-stream", "machine-header", "page-data", "engine-state", "checkpoint", "emulator-context", "checkpoint-end",
    "state:NEW", "memory-stream", "page-data", "engine-state", "checkpoint", "checkpoint-end",
    "state:NEW", "memory-stream", "page-data", "engine-state", "checkpoint", "checkpoint-end",
    "end",
  ]);
  assert.deepEqual(svm, pvm);
  assert.equal(buffer.size, 0);
});

test("back channel: SVM control messages and dirty lists, split above 65536 entries", async () => {
  const machine = emuMachine(100_000);
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine, channel: "back-channel" });
  const big = Uint32Array.from({ length: 70_000 }, (_, i) => i + 1000);
  await w.writeCheckpointState("SVM_SUSPENDED");
  await w.writeMemoryStream();
  await w.writeDirtyPfnList(big);
  await w.writeCheckpoint();
  await w.writeCheckpointState("SVM_READY");
  await w.writeCheckpointState("SVM_RESUMED");
  await w.writeCheckpointState("SVM_SUSPENDED");
  await w.writeMemoryStream();
  await w.writeDirtyPfnList(new Uint32Array(0));
  await w.writeCheckpoint();
  await w.writeEnd();

  const records = await readAll(sink.bytes(), { channel: "back-channel", expect: { memoryBytes: machine.memoryBytes } });
  assert.deepEqual(
    records.map((r) => (r.kind === "checkpoint-state" ? r.control : r.kind === "dirty-pfn-list" ? `dirty:${r.pfns.length}` : r.kind)),
    [
      "SVM_SUSPENDED", "memory-stream", "machine-header", "dirty:65536", "dirty:4464", "checkpoint",
      "SVM_READY", "SVM_RESUMED", "SVM_SUSPENDED", "memory-stream", "dirty:0", "checkpoint", "end",
    ],
  );
  const lists = only(records, "dirty-pfn-list");
  const joined = Uint32Array.from([...(lists[0]?.pfns ?? []), ...(lists[1]?.pfns ?? [])]);
  assert.deepEqual(joined, big);
});

test("an unknown optional record is skipped and reported; PRECOPY_ROUND is optional", async () => {
  const machine = emuMachine(4);
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine });
  await w.writeMemoryStream();
  await writePages(w, new Uint8Array(4 * PAGE_SIZE), allPfns(4));
  await w.writeEngineState(emuState(new Uint8Array(3)));
  await w.writeMemoryEnd();
  await w.writeEnd();
  const bytes = sink.bytes();
  // Insert an unknown optional toolstack record before the final END.
  const endAt = bytes.length - 8;
  const optional = new Uint8Array([0x34, 0x12, 0x00, 0x80, 5, 0, 0, 0, 1, 2, 3, 4, 5, 0, 0, 0]);
  const patched = new Uint8Array(bytes.length + optional.length);
  patched.set(bytes.subarray(0, endAt));
  patched.set(optional, endAt);
  patched.set(bytes.subarray(endAt), endAt + optional.length);
  const records = await readAll(patched, { requireEndOfSource: true });
  const skipped = only(records, "skipped");
  assert.equal(skipped.length, 1);
  assert.deepEqual(
    { layer: skipped[0]?.layer, type: skipped[0]?.type, bodyLength: skipped[0]?.bodyLength },
    { layer: "toolstack", type: 0x80001234, bodyLength: 5 },
  );
  assert.equal(records.at(-1)?.kind, "end");
});

test("the reader works over a Node Readable and the writer over a Writable with backpressure", async () => {
  const random = seededRandom(5);
  const ram = sampleRam(random, 2048, 0.2);
  const machine = emuMachine(2048);
  const pipe = new PassThrough({ highWaterMark: 16 * 1024 });
  const writer = new StreamWriter(writableSink(pipe), { machine });
  const produced = (async () => {
    await writer.writeMemoryStream();
    await writePages(writer, ram, allPfns(2048));
    await writer.writeEngineState(emuState(randomBytes(random, 70_000)));
    await writer.writeMemoryEnd();
    await writer.writeEnd();
    pipe.end();
  })();
  const restored = new Uint8Array(ram.length);
  let maxBacklog = 0;
  for await (const r of new StreamReader(pipe, { requireEndOfSource: true })) {
    maxBacklog = Math.max(maxBacklog, pipe.readableLength);
    if (r.kind === "page-data") applyPageData(r.pages, restored);
  }
  await produced;
  assert.deepEqual(restored, ram);
  // Backpressure: the writer never ran far ahead of the reader (one record beyond the high-water mark).
  assert.ok(maxBacklog < 5 * 1024 * 1024, `backlog ${maxBacklog}`);
});

test("one-octet chunks and Readable.from sources parse the same", async () => {
  const random = seededRandom(6);
  const bytes = await saveStream(sampleRam(random, 40), randomBytes(random, 50));
  const whole = await readAll(bytes);
  const tiny = await readAll(asyncChunks(randomChunks(bytes, random, 1)));
  const readable = await readAll(Readable.from(randomChunks(bytes, random, 777)));
  assert.deepEqual(tiny, whole);
  assert.deepEqual(readable, whole);
});

test("the reader stops at END on a live connection and hands back what follows", async () => {
  const bytes = await saveStream(new Uint8Array(2 * PAGE_SIZE), new Uint8Array(1));
  const after = new Uint8Array([0xaa, 0xbb]);
  const reader = new StreamReader(concatBytes(bytes, after));
  const records: StreamRecord[] = [];
  for (;;) {
    const r = await reader.next();
    if (r === undefined) break;
    records.push(r);
  }
  assert.equal(records.at(-1)?.kind, "end");
  assert.equal(await reader.next(), undefined);
  assert.equal(reader.offset, bytes.length);
  assert.deepEqual(reader.takeBuffered(), after);
});

test("PageBuffer holds each pfn once, replaces earlier contents, and can be discarded", () => {
  const buffer = new PageBuffer(8);
  const page = (v: number): Uint8Array => new Uint8Array(PAGE_SIZE).fill(v);
  buffer.add({ pfns: Uint32Array.of(1, 2), types: Uint8Array.of(0, 0), data: Uint8Array.from([...page(1), ...page(2)]) });
  buffer.add({ pfns: Uint32Array.of(2, 3), types: Uint8Array.of(0, PAGE_TYPE.ZERO), data: page(7) });
  assert.equal(buffer.size, 3);
  assert.equal(buffer.contentBytes, 2 * PAGE_SIZE);
  assert.deepEqual(buffer.pfns(), Uint32Array.of(1, 2, 3));
  const ram = new Uint8Array(8 * PAGE_SIZE).fill(5);
  buffer.applyTo(ram);
  assert.equal(ram[PAGE_SIZE], 1);
  assert.equal(ram[2 * PAGE_SIZE], 7);
  assert.equal(ram[3 * PAGE_SIZE], 0);
  assert.equal(ram[4 * PAGE_SIZE], 5);
  assert.equal(buffer.size, 0);
  buffer.add({ pfns: Uint32Array.of(4), types: Uint8Array.of(0), data: page(9) });
  buffer.clear();
  assert.equal(buffer.size, 0);
});

test("unionSortedPfns merges two ascending lists without duplicates", () => {
  assert.deepEqual(unionSortedPfns(Uint32Array.of(1, 3, 5, 9), Uint32Array.of(0, 3, 4, 9, 10)), Uint32Array.of(0, 1, 3, 4, 5, 9, 10));
  assert.deepEqual(unionSortedPfns(new Uint32Array(0), Uint32Array.of(2)), Uint32Array.of(2));
  assert.deepEqual(unionSortedPfns(new Uint32Array(0), new Uint32Array(0)), new Uint32Array(0));
});
