/**
 * LINK_TRANSLATION (docs/specs/stream.md §3.15): round trip through the
 * writer and reader, its place (forward stream, once, before the first
 * MEMORY_STREAM) and the fields a reader rejects.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { PAGE_SIZE } from "../engine/engine.js";
import type { TranslationEntry } from "./link-translation-record.js";
import { readAll } from "./reader.js";
import { MemorySink } from "./sink.js";
import { concatBytes, emuMachine, emuState, rawRecord, rejects, u32s } from "./testing.js";
import { encodeToolstackHeader } from "./toolstack-header.js";
import { allPfns, writePages } from "./write-pages.js";
import { StreamWriter } from "./writer.js";

const PAGES = 2;
const LINK_TRANSLATION = 0x8000_0108;

const LEARNED: TranslationEntry = {
  guestIp: 0x0a4d000a,
  guestPort: 6379,
  peerIp: 0x0a4d0002,
  peerPort: 41000,
  svmIsn: 0x9abcdef0,
  svmSynTsval: 7000,
  offset: 0xffff_fff0,
  tsOffset: 393_000,
  guestFinEnd: undefined,
  peerFinEnd: 5001,
  guestFinAcked: false,
  peerFinAcked: true,
};
const UNLEARNED: TranslationEntry = { ...LEARNED, guestPort: 22, svmSynTsval: undefined, offset: undefined, tsOffset: undefined, peerFinEnd: undefined, peerFinAcked: false };

async function stream(layers: TranslationEntry[][]): Promise<Uint8Array> {
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: emuMachine(PAGES) });
  await w.writeReplicationMode({ mode: "compare", disks: false });
  await w.writeLinkTranslation(layers);
  await w.writeMemoryStream();
  await writePages(w, new Uint8Array(PAGES * PAGE_SIZE), allPfns(PAGES));
  await w.writeEngineState(emuState(new Uint8Array(3)));
  await w.writeCheckpoint();
  await w.writeCheckpointEnd();
  await w.writeEnd();
  return sink.bytes();
}

test("LINK_TRANSLATION: layers and entries round trip, unlearned fields stay undefined", async () => {
  const layers = [[LEARNED, UNLEARNED], [], [UNLEARNED]];
  const records = await readAll(await stream(layers), { requireEndOfSource: true });
  const r = records.find((x) => x.kind === "link-translation");
  assert.ok(r && r.kind === "link-translation");
  assert.deepEqual(r.layers, layers);
  assert.equal(records.indexOf(r), 1, "after REPLICATION_MODE, before the memory");
});

test("LINK_TRANSLATION: the writer refuses no layer or too many, the reader a second record or one after the memory", async () => {
  const w = new StreamWriter(new MemorySink(), { machine: emuMachine(PAGES) });
  await assert.rejects(w.writeLinkTranslation([]), /0 layers, allowed 1 to 16/);
  await assert.rejects(w.writeLinkTranslation(Array.from({ length: 17 }, () => [])), /17 layers/);
  const head = encodeToolstackHeader();
  const one = rawRecord(LINK_TRANSLATION, u32s(1, 0, 0, 0));
  await rejects(concatBytes(head, one, one), "OUT_OF_ORDER", { message: /a second LINK_TRANSLATION/ });
  await rejects(concatBytes(head, one), "OUT_OF_ORDER", { message: /LINK_TRANSLATION on the back channel/, reader: { channel: "back-channel" } });
  const bytes = await stream([[LEARNED]]);
  const records = await readAll(bytes);
  const ce = records.find((r) => r.kind === "checkpoint-end");
  const afterEnd = (ce?.offset ?? 0) + 8;
  await rejects(concatBytes(bytes.subarray(0, afterEnd), one), "OUT_OF_ORDER", { message: /LINK_TRANSLATION after the first MEMORY_STREAM/ });
});

test("LINK_TRANSLATION: the reader rejects bad counts, reserved fields, flags and lengths, naming the record", async () => {
  const head = encodeToolstackHeader();
  const entry = (flags: number): Uint8Array => concatBytes(u32s(1, 2), Uint8Array.of(0, 1, 0, 2), u32s(flags, 0, 0, 0, 0, 0, 0));
  await rejects(concatBytes(head, rawRecord(LINK_TRANSLATION, u32s(0, 0, 0, 0))), "BAD_FIELD", { message: /LINK_TRANSLATION.*layer_count 0/ });
  await rejects(concatBytes(head, rawRecord(LINK_TRANSLATION, u32s(1, 1, 0, 0))), "BAD_RESERVED", { message: /reserved field is not zero/ });
  await rejects(concatBytes(head, rawRecord(LINK_TRANSLATION, u32s(1, 0, 0, 5))), "BAD_RESERVED", { message: /layer 0: reserved/ });
  await rejects(concatBytes(head, rawRecord(LINK_TRANSLATION, concatBytes(u32s(1, 0, 1, 0), entry(0x80)))), "BAD_FIELD", { message: /layer 0 entry 0: unknown flags 0x80/ });
  await rejects(concatBytes(head, rawRecord(LINK_TRANSLATION, concatBytes(u32s(1, 0, 2, 0), entry(0)))), "BAD_LENGTH", { message: /names 2 entries \(80 octets\) but 40/ });
  await rejects(concatBytes(head, rawRecord(LINK_TRANSLATION, u32s(2, 0, 0, 0))), "BAD_LENGTH", { message: /ends inside layer 1/ });
  await rejects(concatBytes(head, rawRecord(LINK_TRANSLATION, u32s(1, 0, 0, 0, 0, 0))), "BAD_LENGTH", { message: /8 octets after the last layer/ });
  await rejects(concatBytes(head, rawRecord(LINK_TRANSLATION, u32s(1, 0))), "BAD_LENGTH", { message: /LINK_TRANSLATION/ });
});

test("LINK_TRANSLATION: once inside each checkpoint too (its refresh), not twice in one", async () => {
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: emuMachine(PAGES) });
  await w.writeLinkTranslation([[LEARNED]]);
  await w.writeMemoryStream();
  await writePages(w, new Uint8Array(PAGES * PAGE_SIZE), allPfns(PAGES));
  await w.writeEngineState(emuState(new Uint8Array(3)));
  await w.writeCheckpoint();
  await w.writeLinkTranslation([[]]);
  await assert.rejects(w.writeLinkTranslation([[]]), /a second LINK_TRANSLATION in one checkpoint/);
  await w.writeCheckpointEnd();
  await assert.rejects(w.writeLinkTranslation([[]]), /outside a checkpoint/);
  await w.writeEnd();
  const records = await readAll(sink.bytes());
  assert.deepEqual(records.filter((r) => r.kind === "link-translation").map((r) => (r.kind === "link-translation" ? r.layers.length : -1)), [1, 1]);
});
