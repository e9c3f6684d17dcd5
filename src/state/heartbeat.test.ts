/**
 * HEARTBEAT (docs/specs/stream.md §3.7): round trips on both channels, its
 * place in the grammar (§6.1, §6.3), its fields, and the writer's checks.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { PAGE_SIZE } from "../engine/engine.js";
import { StreamError, type StreamErrorCode } from "./errors.js";
import { encodeMemoryHeaders } from "./memory-header.js";
import { PAGE_TYPE } from "./pfn-entry.js";
import { readAll, type ReaderOptions } from "./reader.js";
import type { StreamRecord } from "./records.js";
import { MemorySink } from "./sink.js";
import { concatBytes, emuMachine, emuState, rawRecord, rejects, u32s } from "./testing.js";
import { encodeToolstackHeader } from "./toolstack-header.js";
import { allPfns, writePages } from "./write-pages.js";
import { StreamWriter } from "./writer.js";

const PAGES = 4;
const MACHINE = emuMachine(PAGES);
const EMPTY = new Uint8Array(0);
const BACK: ReaderOptions = { channel: "back-channel" };

function u64s(...values: bigint[]): Uint8Array {
  const out = new Uint8Array(8 * values.length);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setBigUint64(8 * i, v, true));
  return out;
}

const rec = {
  heartbeat: (sequence: number | bigint, time: number | bigint = 1000) => rawRecord(0x100, u64s(BigInt(sequence), BigInt(time))),
  memoryStream: () => rawRecord(0x1, EMPTY),
  end: () => rawRecord(0x0, EMPTY),
  memoryEnd: () => rawRecord(0x0, EMPTY),
  checkpoint: () => rawRecord(0xe, EMPTY),
  checkpointEnd: () => rawRecord(0x4, EMPTY),
  checkpointState: (id: number) => rawRecord(0x5, u32s(id)),
  emulatorContext: () => rawRecord(0x3, concatBytes(u32s(1, 0), new Uint8Array([1, 2, 3]))),
  allZero: () => rawRecord(0x1, concatBytes(u32s(PAGES, 0), ...Array.from({ length: PAGES }, (_, i) => u32s(i, 0xe000_0000)))),
  emuState: () => rawRecord(0x100, concatBytes(u32s(1, 1), new Uint8Array([7, 7, 7, 7, 7, 7, 7, 7]))),
  dirty: (...pfns: number[]) => rawRecord(0xf, concatBytes(...pfns.map((p) => u32s(p, 0)))),
};

/** Header, the first memory part closed by CHECKPOINT: checkpoint 0 is open. */
function coloStart(): Uint8Array[] {
  return [encodeToolstackHeader(), rec.memoryStream(), encodeMemoryHeaders(MACHINE), rec.allZero(), rec.emuState(), rec.checkpoint()];
}

/** Back channel: header, SVM_SUSPENDED, the first memory part with its headers (open). */
function backStart(): Uint8Array[] {
  return [encodeToolstackHeader(), rec.checkpointState(1), rec.memoryStream(), encodeMemoryHeaders(MACHINE)];
}

function isStreamError(code: StreamErrorCode, message?: RegExp): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof StreamError, String(err));
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return true;
  };
}

function describe(r: StreamRecord): string {
  if (r.kind === "heartbeat") return `hb:${r.heartbeat.sequence}`;
  if (r.kind === "checkpoint-state") return r.control;
  return r.kind;
}

test("image stream: heartbeats between checkpoints round trip, values exact up to 2^53-1", async () => {
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: MACHINE });
  await w.writeMemoryStream();
  await writePages(w, new Uint8Array(PAGES * PAGE_SIZE), allPfns(PAGES));
  await w.writeEngineState(emuState(new Uint8Array(3)));
  await w.writeCheckpoint();
  await w.writeCheckpointEnd();
  await w.writeHeartbeat({ sequence: 0, senderTimeMs: 0 });
  await w.writeHeartbeat({ sequence: 1, senderTimeMs: 1_700_000_000_123 });
  await w.writeCheckpointState("NEW");
  await w.writeMemoryStream();
  await w.writePageData({ pfns: Uint32Array.of(2), types: Uint8Array.of(PAGE_TYPE.ZERO), data: EMPTY });
  await w.writeEngineState(emuState(new Uint8Array(3)));
  await w.writeCheckpoint();
  await w.writeCheckpointEnd();
  await w.writeHeartbeat({ sequence: 2, senderTimeMs: 1_700_000_000_200 });
  await w.writeHeartbeat({ sequence: Number.MAX_SAFE_INTEGER, senderTimeMs: Number.MAX_SAFE_INTEGER });
  await w.writeEnd();

  const records = await readAll(sink.bytes(), { expect: { engineId: "emu", memoryBytes: MACHINE.memoryBytes }, requireEndOfSource: true });
  assert.deepEqual(records.map(describe), [
    "memory-stream", "machine-header", "page-data", "engine-state", "checkpoint", "checkpoint-end",
    "hb:0", "hb:1", "NEW", "memory-stream", "page-data", "engine-state", "checkpoint", "checkpoint-end",
    "hb:2", `hb:${Number.MAX_SAFE_INTEGER}`, "end",
  ]);
  const beats = records.filter((r) => r.kind === "heartbeat");
  assert.deepEqual(beats[1], { kind: "heartbeat", offset: beats[1]?.offset, heartbeat: { sequence: 1, senderTimeMs: 1_700_000_000_123 } });
  assert.deepEqual(beats[3]?.kind === "heartbeat" ? beats[3].heartbeat : undefined, { sequence: Number.MAX_SAFE_INTEGER, senderTimeMs: Number.MAX_SAFE_INTEGER });
});

test("back channel: heartbeats before the first control message and interleaved with SVM_* states round trip", async () => {
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: MACHINE, channel: "back-channel" });
  await w.writeHeartbeat({ sequence: 0, senderTimeMs: 5 });
  await w.writeHeartbeat({ sequence: 1, senderTimeMs: 1005 });
  await w.writeCheckpointState("SVM_SUSPENDED");
  await w.writeHeartbeat({ sequence: 2, senderTimeMs: 2005 });
  await w.writeMemoryStream();
  await w.writeDirtyPfnList(Uint32Array.of(1, 3));
  await w.writeCheckpoint();
  await w.writeHeartbeat({ sequence: 3, senderTimeMs: 3005 });
  await w.writeCheckpointState("SVM_READY");
  await w.writeHeartbeat({ sequence: 4, senderTimeMs: 4005 });
  await w.writeCheckpointState("SVM_RESUMED");
  await w.writeHeartbeat({ sequence: 5, senderTimeMs: 5005 });
  await w.writeEnd();

  const records = await readAll(sink.bytes(), { ...BACK, requireEndOfSource: true });
  assert.deepEqual(records.map(describe), [
    "hb:0", "hb:1", "SVM_SUSPENDED", "hb:2", "memory-stream", "machine-header", "dirty-pfn-list", "checkpoint",
    "hb:3", "SVM_READY", "hb:4", "SVM_RESUMED", "hb:5", "end",
  ]);
  assert.deepEqual(records[0], { kind: "heartbeat", offset: 16, heartbeat: { sequence: 0, senderTimeMs: 5 } });
  // A heartbeat-only back channel (no checkpoint yet) is a valid stream too.
  const idle = await readAll(concatBytes(encodeToolstackHeader(), rec.heartbeat(0), rec.heartbeat(1), rec.end()), BACK);
  assert.deepEqual(idle.map(describe), ["hb:0", "hb:1", "end"]);
});

test("HEARTBEAT octets: u64 sequence, u64 sender_time_ms, little-endian, no padding", async () => {
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: MACHINE, channel: "back-channel" });
  await w.writeHeartbeat({ sequence: 0x0102_0304_0506, senderTimeMs: 2 ** 40 + 7 });
  assert.deepEqual(sink.bytes(), concatBytes(encodeToolstackHeader(), u32s(0x100, 16), u64s(0x0102_0304_0506n, 2n ** 40n + 7n)));
  assert.equal(sink.length, 16 + 8 + 16);
});

test("HEARTBEAT out of place on an image stream is rejected", async () => {
  const h = encodeToolstackHeader();
  const closed = [...coloStart(), rec.checkpointEnd()];
  const cases: [string, Uint8Array[], RegExp][] = [
    ["right after the header", [h, rec.heartbeat(0)], /HEARTBEAT outside a COLO stream/],
    ["before the first checkpoint is closed (checkpoint 0 open)", [...coloStart(), rec.heartbeat(0)], /HEARTBEAT while a checkpoint awaits its CHECKPOINT_END/],
    ["after EMULATOR_CONTEXT in an open checkpoint", [...coloStart(), rec.emulatorContext(), rec.heartbeat(0)], /HEARTBEAT while a checkpoint awaits/],
    ["between NEW and MEMORY_STREAM", [...closed, rec.checkpointState(0), rec.heartbeat(0)], /NEW must be followed by MEMORY_STREAM/],
    [
      "inside a later open checkpoint",
      [...closed, rec.checkpointState(0), rec.memoryStream(), rec.emuState(), rec.checkpoint(), rec.heartbeat(0)],
      /HEARTBEAT while a checkpoint awaits/,
    ],
    [
      "in a save file (after the memory END)",
      [h, rec.memoryStream(), encodeMemoryHeaders(MACHINE), rec.allZero(), rec.emuState(), rec.memoryEnd(), rec.heartbeat(0)],
      /HEARTBEAT outside a COLO stream/,
    ],
  ];
  for (const [name, parts, message] of cases) {
    await assert.doesNotReject(rejects(parts, "OUT_OF_ORDER", { message }), name);
  }
  // Where NEW may come, it may come, and it opens nothing: END and NEW may follow.
  assert.equal((await readAll(concatBytes(...closed, rec.heartbeat(0), rec.end()))).at(-1)?.kind, "end");
});

test("HEARTBEAT inside a memory part is read in the memory layer, where 0x100 is EMU_STATE, and rejected", async () => {
  // Image stream, before the part's engine state: sequence 0 reads as engine_id 0.
  await rejects(
    [encodeToolstackHeader(), rec.memoryStream(), encodeMemoryHeaders(MACHINE), rec.allZero(), rec.heartbeat(0)],
    "BAD_FIELD",
    { message: /memory record EMU_STATE \(0x00000100\): engine_id 0/ },
  );
  // After the engine state, or one that decodes as a valid EMU_STATE: a second engine state.
  await rejects(
    [encodeToolstackHeader(), rec.memoryStream(), encodeMemoryHeaders(MACHINE), rec.allZero(), rec.emuState(), rec.heartbeat(2n ** 32n + 1n)],
    "OUT_OF_ORDER",
    { message: /a second engine state/ },
  );
  // Back channel: an engine state is not allowed there.
  await rejects([...backStart(), rec.heartbeat(2n ** 32n + 1n)], "OUT_OF_ORDER", { message: /engine state on the back channel/, reader: BACK });
  await rejects([...backStart(), rec.dirty(1), rec.heartbeat(0)], "BAD_FIELD", { message: /EMU_STATE/, reader: BACK });
});

test("HEARTBEAT fields: sequence must increase, both below 2^53; body exactly 16 octets", async () => {
  const closed = [...coloStart(), rec.checkpointEnd()];
  const where = /toolstack record HEARTBEAT \(0x00000100\)/;
  // Non-increasing sequences, on both channels, also across checkpoints.
  await rejects([...closed, rec.heartbeat(5), rec.heartbeat(5)], "BAD_FIELD", { message: /sequence 5 after 5: heartbeat sequences must increase/ });
  await rejects([...closed, rec.heartbeat(5), rec.heartbeat(4)], "BAD_FIELD", { message: /sequence 4 after 5/ });
  await rejects(
    [...closed, rec.heartbeat(3), rec.checkpointState(0), rec.memoryStream(), rec.emuState(), rec.checkpoint(), rec.checkpointEnd(), rec.heartbeat(3)],
    "BAD_FIELD",
    { message: /sequence 3 after 3/ },
  );
  await rejects([encodeToolstackHeader(), rec.heartbeat(0), rec.checkpointState(1), rec.heartbeat(0)], "BAD_FIELD", { message: /sequence 0 after 0/, reader: BACK });
  // Gaps are not the reader's business; a first sequence other than 0 neither.
  assert.equal((await readAll(concatBytes(...closed, rec.heartbeat(7), rec.heartbeat(9), rec.end()))).at(-1)?.kind, "end");
  // 2^53 and above.
  const big = await rejects([...closed, rec.heartbeat(2n ** 53n)], "BAD_FIELD", { message: /sequence 9007199254740992 is 2\^53 or more/ });
  assert.match(big.message, where);
  await rejects([...closed, rec.heartbeat(2n ** 64n - 1n)], "BAD_FIELD", { message: /sequence 18446744073709551615/ });
  await rejects([...closed, rec.heartbeat(0, 2n ** 53n)], "BAD_FIELD", { message: /sender_time_ms 9007199254740992 is 2\^53 or more/ });
  await rejects([encodeToolstackHeader(), rec.heartbeat(0, 2n ** 63n)], "BAD_FIELD", { message: /sender_time_ms/, reader: BACK });
  // Wrong body lengths, rejected before the body is read (no body follows).
  for (const length of [0, 8, 15, 17, 24]) {
    await rejects([...closed, u32s(0x100, length)], "BAD_LENGTH", { message: /HEARTBEAT takes exactly 16/ });
    await rejects([encodeToolstackHeader(), u32s(0x100, length)], "BAD_LENGTH", { message: /HEARTBEAT takes exactly 16/, reader: BACK });
  }
  // Its optional shadow is corrupt, not skippable; the rest of the range is reserved.
  await rejects([encodeToolstackHeader(), rawRecord(0x8000_0100, new Uint8Array(16))], "UNKNOWN_RECORD", { message: /shadows the mandatory HEARTBEAT/, reader: BACK });
  await rejects([encodeToolstackHeader(), rawRecord(0x108, new Uint8Array(16))], "UNKNOWN_RECORD", { reader: BACK });
  await rejects([encodeToolstackHeader(), rawRecord(0x1ff, new Uint8Array(16))], "UNKNOWN_RECORD", { reader: BACK });
});

test("writeHeartbeat: values and order checked before writing; placement as the reader's", async () => {
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: MACHINE });
  await assert.rejects(w.writeHeartbeat({ sequence: 0, senderTimeMs: 0 }), isStreamError("OUT_OF_ORDER", /HEARTBEAT outside a COLO stream/));
  assert.equal(sink.length, 0, "not even the toolstack header was written");
  await w.writeMemoryStream();
  await writePages(w, new Uint8Array(PAGES * PAGE_SIZE), allPfns(PAGES));
  await assert.rejects(w.writeHeartbeat({ sequence: 0, senderTimeMs: 0 }), isStreamError("OUT_OF_ORDER", /heartbeat inside a memory part/));
  await w.writeEngineState(emuState(new Uint8Array(1)));
  await w.writeCheckpoint();
  await assert.rejects(w.writeHeartbeat({ sequence: 0, senderTimeMs: 0 }), isStreamError("OUT_OF_ORDER", /while a checkpoint awaits/));
  await w.writeCheckpointEnd();
  const refused: [unknown, unknown, RegExp][] = [
    [-1, 0, /sequence -1 is not an integer/],
    [2 ** 53, 0, /sequence 9007199254740992 is not an integer in 0..2\^53-1/],
    [0.5, 0, /sequence 0.5/],
    [Number.NaN, 0, /sequence NaN/],
    [10n, 0, /sequence 10 is not an integer/],
    [0, -1, /sender_time_ms -1/],
    [0, 2 ** 53, /sender_time_ms 9007199254740992/],
    [0, 1.5, /sender_time_ms 1.5/],
  ];
  const before = sink.length;
  for (const [sequence, senderTimeMs, message] of refused) {
    const heartbeat = { sequence, senderTimeMs } as { sequence: number; senderTimeMs: number };
    await assert.rejects(w.writeHeartbeat(heartbeat), isStreamError("BAD_FIELD", message), String(message));
  }
  await w.writeHeartbeat({ sequence: 0, senderTimeMs: 10 });
  await assert.rejects(w.writeHeartbeat({ sequence: 0, senderTimeMs: 20 }), isStreamError("BAD_FIELD", /sequence 0 after 0/));
  await w.writeHeartbeat({ sequence: 1, senderTimeMs: 20 });
  assert.equal(sink.length, before + 2 * 24, "refused heartbeats wrote nothing");
  await w.writeCheckpointState("NEW");
  await assert.rejects(w.writeHeartbeat({ sequence: 2, senderTimeMs: 30 }), isStreamError("OUT_OF_ORDER", /NEW must be followed by MEMORY_STREAM/));
  await w.writeMemoryStream();
  await w.writeEngineState(emuState(new Uint8Array(1)));
  await w.writeCheckpoint();
  await w.writeCheckpointEnd();
  await w.writeHeartbeat({ sequence: 2, senderTimeMs: 30 });
  await w.writeEnd();
  const records = await readAll(sink.bytes(), { requireEndOfSource: true });
  assert.deepEqual(records.filter((r) => r.kind === "heartbeat").map(describe), ["hb:0", "hb:1", "hb:2"]);

  // A save file never carries one.
  const save = new StreamWriter(new MemorySink(), { machine: MACHINE });
  await save.writeMemoryStream();
  await writePages(save, new Uint8Array(PAGES * PAGE_SIZE), allPfns(PAGES));
  await save.writeEngineState(emuState(new Uint8Array(1)));
  await save.writeMemoryEnd();
  await assert.rejects(save.writeHeartbeat({ sequence: 0, senderTimeMs: 0 }), isStreamError("OUT_OF_ORDER", /outside a COLO stream/));

  // Back channel: anywhere in the toolstack layer, never inside a memory part.
  const back = new StreamWriter(new MemorySink(), { machine: MACHINE, channel: "back-channel" });
  await back.writeHeartbeat({ sequence: 0, senderTimeMs: 0 });
  await back.writeMemoryStream();
  await assert.rejects(back.writeHeartbeat({ sequence: 1, senderTimeMs: 0 }), isStreamError("OUT_OF_ORDER", /heartbeat inside a memory part/));
  await back.writeCheckpoint();
  await back.writeHeartbeat({ sequence: 1, senderTimeMs: 0 });
  await back.writeEnd();
  await assert.rejects(back.writeHeartbeat({ sequence: 2, senderTimeMs: 0 }), isStreamError("OUT_OF_ORDER", /after the toolstack END/));
});

test("every single-bit flip of a HEARTBEAT is rejected, or changes only sender_time_ms or a sequence that still increases", async () => {
  const closed = [...coloStart(), rec.checkpointEnd()];
  const prefix = concatBytes(...closed, rec.heartbeat(4, 100));
  const target = rec.heartbeat(6, 2000);
  const bytes = concatBytes(prefix, target, rec.heartbeat(9, 3000), rec.end());
  const at = prefix.length;
  let undetected = 0;
  for (let octet = at; octet < at + target.length; octet++) {
    for (let bit = 0; bit < 8; bit++) {
      const mutated = bytes.slice();
      mutated[octet] = (mutated[octet] ?? 0) ^ (1 << bit);
      let records: StreamRecord[] | undefined;
      try {
        records = await readAll(mutated, { requireEndOfSource: true });
      } catch (err) {
        assert.ok(err instanceof StreamError && err.code !== "INTERNAL", String(err));
        continue;
      }
      undetected++;
      const field = octet - at - 8; // 0-7 sequence, 8-15 sender_time_ms
      const [, beat] = records.filter((r) => r.kind === "heartbeat");
      assert.ok(beat?.kind === "heartbeat", `octet ${octet} bit ${bit}`);
      if (field >= 8) {
        assert.equal(beat.heartbeat.sequence, 6);
        assert.ok(field < 14 || (field === 14 && bit < 5), `sender_time_ms bit ${8 * (field - 8) + bit} went through`);
      } else {
        assert.ok(field >= 0 && beat.heartbeat.sequence > 4 && beat.heartbeat.sequence < 9, `octet ${octet} bit ${bit}`);
      }
    }
  }
  // Between 4 and 9, sequence 6 (0b110) may only become 7 (bit 0): one flip of the sequence; 53 of sender_time_ms.
  assert.equal(undetected, 1 + 53);
});
