/**
 * verifyStream() on streams the writer builds (a save file, a COLO forward
 * stream with checkpoints, a back channel): the summary, the same result
 * whatever the chunking; the failure of a stream cut at every offset
 * (TRUNCATED at exactly that offset, never a throw or a hang); a huge
 * body_length refused before anything more is read.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { encodeRecordHeader } from "./framing.js";
import { backChannelStream, coloForwardStream, randomChunks, SAMPLE_VM_CONFIG, sampleRam, saveStream, seededRandom, concatBytes, asyncChunks } from "./testing.js";
import { encodeToolstackHeader } from "./toolstack-header.js";
import { verifyStream, type VerifyResult } from "./verify.js";

const PAGES = 1500;

function ok(result: VerifyResult): Extract<VerifyResult, { ok: true }>["summary"] {
  assert.ok(result.ok, result.ok ? "" : result.failure.line);
  return result.summary;
}

function failed(result: VerifyResult): Extract<VerifyResult, { ok: false }>["failure"] {
  assert.ok(!result.ok, "the stream was accepted");
  return result.failure;
}

test("a save file: its machine, pages, records by type and every octet counted", async () => {
  const ram = sampleRam(seededRandom(1), PAGES, 0.8);
  const bytes = await saveStream(ram, new Uint8Array([1, 2, 3]), SAMPLE_VM_CONFIG);
  const s = ok(await verifyStream(bytes));
  assert.equal(s.kind, "save");
  assert.equal(s.bytes, bytes.length);
  assert.deepEqual(s.machine, { engine: "emu", memoryBytes: PAGES * 4096, vcpuCount: 1, pageCount: PAGES });
  assert.equal(s.pages.records, 2);
  assert.equal(s.pages.entries, PAGES);
  assert.equal(s.pages.normal + s.pages.zero, PAGES);
  assert.deepEqual(Object.keys(s.types.toolstack), ["VM_CONFIG", "MEMORY_STREAM", "END"]);
  assert.deepEqual(Object.keys(s.types.memory), ["PAGE_DATA", "EMU_STATE", "END"]);
  assert.equal(s.records, 7);
  assert.equal(s.vmConfig?.path, SAMPLE_VM_CONFIG.path);
  assert.deepEqual(s.engineState, { record: "EMU_STATE", engine: "emu", formatVersion: 1, bytes: 8 + 8 + 3 + 5, count: 1 });
  // Every octet belongs to a record or a header: 16 (toolstack), 24 + 16 (memory headers).
  const tallied = [...Object.values(s.types.toolstack), ...Object.values(s.types.memory)].reduce((n, t) => n + t.bytes, 0);
  assert.equal(tallied + 16 + 40, bytes.length);
});

test("a COLO forward stream: checkpoints, heartbeats, disk and net records, the replication mode", async () => {
  const ram = sampleRam(seededRandom(2), 64, 0.5);
  const s = ok(await verifyStream(await coloForwardStream(ram, 3)));
  assert.equal(s.kind, "replication");
  assert.equal(s.memoryParts, 4);
  assert.equal(s.checkpoints, 4, "checkpoint 0 and three more");
  assert.equal(s.types.toolstack["CHECKPOINT_END"]?.count, 4);
  assert.equal(s.types.toolstack["HEARTBEAT"]?.count, 3);
  assert.equal(s.types.toolstack["NET_FRAME"]?.count, 3);
  assert.equal(s.types.toolstack["DISK_WRITE"]?.count, 4);
  assert.deepEqual(s.controls, { NEW: 3 });
  assert.deepEqual(s.replication, { mode: "compare", disks: true });
  assert.deepEqual(s.engineCompat, { engine: "emu", descriptor: "v86 0.5.462+g5f9a90f state 2" });
  assert.equal(s.engineState?.count, 4);
  assert.equal(s.pages.entries, 64 + 3 * 2);
});

test("a back channel verifies as one; read as an image stream its first record is out of order (§6.1)", async () => {
  const bytes = await backChannelStream(16, 2);
  const s = ok(await verifyStream(bytes, { channel: "back-channel" }));
  assert.equal(s.kind, "back-channel");
  assert.equal(s.checkpoints, 2);
  assert.deepEqual(s.controls, { SVM_READY: 3, SVM_SUSPENDED: 2, SVM_RESUMED: 2 });
  assert.equal(s.types.memory["CHECKPOINT_DIRTY_PFN_LIST"]?.count, 2);
  const f = failed(await verifyStream(bytes));
  assert.equal(f.line, "record 0 (toolstack DISK_WANT 0x00000106) at offset 16: DISK_WANT belongs to the back channel [OUT_OF_ORDER, spec §6.1]");
});

test("the summary does not depend on how the source is chunked", async () => {
  const bytes = await coloForwardStream(sampleRam(seededRandom(3), 32, 0.3), 2);
  const whole = ok(await verifyStream(bytes));
  for (const seed of [1, 2, 3]) {
    const chunked = ok(await verifyStream(asyncChunks(randomChunks(bytes, seededRandom(seed), 5000))));
    assert.deepEqual(chunked, whole);
  }
});

test("a stream cut at any offset is TRUNCATED at exactly that offset, inside the record it cuts", async () => {
  const bytes = await saveStream(sampleRam(seededRandom(4), 8, 0.5), new Uint8Array([9]), SAMPLE_VM_CONFIG);
  const valid = ok(await verifyStream(bytes));
  for (let cut = 0; cut < bytes.length; cut += cut < 200 ? 1 : 61) {
    const f = failed(await verifyStream(bytes.subarray(0, cut)));
    assert.equal(f.code, "TRUNCATED", `cut at ${cut}: ${f.line}`);
    assert.equal(f.endedAt, cut, `cut at ${cut}`);
    assert.ok(f.line.startsWith(`truncated at offset ${cut} `), f.line);
    assert.ok(f.record === undefined || f.record < valid.records, `cut at ${cut}: record ${String(f.record)}`);
  }
});

test("a huge body_length is refused before its body is read: the source is not pulled further", async () => {
  let pulled = 0;
  async function* endless(): AsyncGenerator<Uint8Array, void, undefined> {
    yield concatBytes(encodeToolstackHeader(), encodeRecordHeader(0x200, 0xffff_fff8));
    for (;;) {
      pulled++;
      yield new Uint8Array(1 << 20);
    }
  }
  const f = failed(await verifyStream(endless()));
  assert.equal(f.line, "record 0 (toolstack VM_CONFIG 0x00000200) at offset 16: body_length 4294967288 exceeds the limit of 67108864 for any record [BAD_LENGTH, spec §2]");
  assert.equal(pulled, 0);

  // Within 64 MiB but above the type's own maximum: the type's section.
  const g = failed(await verifyStream(concatBytes(encodeToolstackHeader(), encodeRecordHeader(0x200, 60 * 2 ** 20))));
  assert.equal(g.line, "record 0 (toolstack VM_CONFIG 0x00000200) at offset 16: body_length 62914560, VM_CONFIG takes 10 to 69640 [BAD_LENGTH, spec §3.6]");
});

test("an empty source and a source that fails", async () => {
  const f = failed(await verifyStream(new Uint8Array(0)));
  assert.equal(f.line, "truncated at offset 0 inside the toolstack header (from offset 0): the stream ended after 0 of 16 octets [TRUNCATED, spec §6.1, §7]");
  async function* broken(): AsyncGenerator<Uint8Array, void, undefined> {
    yield encodeToolstackHeader();
    throw new Error("EIO: disk on fire");
  }
  const g = failed(await verifyStream(broken()));
  assert.equal(g.code, "IO");
  assert.equal(g.section, "");
  assert.match(g.line, /EIO: disk on fire \[IO\]$/);
});
