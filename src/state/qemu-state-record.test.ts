/**
 * QEMU_STATE (docs/specs/stream.md §4.9): the qemu engine's state in the
 * memory layer, beside EMU_STATE. Round trip and octets, and every
 * rejection: wrong engine in the record or the machine, EMU_STATE in a qemu
 * stream, unknown format, bad lengths, shadow, order.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { PAGE_SIZE } from "../engine/engine.js";
import { EMU_STATE_FORMAT_VERSION } from "../engine/emu/emu-engine.js";
import { QEMU_STATE_FORMAT_VERSION } from "../engine/qemu/qemu-state.js";
import { EMU_STATE_FORMAT, QEMU_STATE_FORMAT } from "./engine-state.js";
import { StreamError, type StreamErrorCode } from "./errors.js";
import { encodeRecordHeader } from "./framing.js";
import { encodeMemoryHeaders, machineHeader, type MachineHeader } from "./memory-header.js";
import { readAll } from "./reader.js";
import { MAX_BLOB_SIZE, MEMORY_RECORD } from "./record-types.js";
import { MemorySink } from "./sink.js";
import { concatBytes, emuMachine, emuState, qemuMachine, qemuState, rawRecord, rejects, u32s } from "./testing.js";
import { encodeToolstackHeader } from "./toolstack-header.js";
import { allPfns, writePages } from "./write-pages.js";
import { StreamWriter } from "./writer.js";

const PAGES = 4;
const QEMU = qemuMachine(PAGES);
const EMU = emuMachine(PAGES);

const BLOB = new Uint8Array([0x43, 0x51, 0x53, 0x54, 9, 9, 9]);
const allZero = (): Uint8Array =>
  rawRecord(0x1, concatBytes(u32s(PAGES, 0), ...Array.from({ length: PAGES }, (_, i) => u32s(i, 0xe000_0000))));
const stateRecord = (type: number, engine: number, format: number, blob: Uint8Array = BLOB): Uint8Array => rawRecord(type, concatBytes(u32s(engine, format), blob));
const qemuRecord = (engine = 3, format = 1, blob: Uint8Array = BLOB): Uint8Array => stateRecord(0x140, engine, format, blob);
const emuRecord = (engine = 1, format = 2): Uint8Array => stateRecord(0x100, engine, format);
const memoryEnd = (): Uint8Array => rawRecord(0x0, new Uint8Array(0));
const checkpoint = (): Uint8Array => rawRecord(0xe, new Uint8Array(0));
const memoryStream = (): Uint8Array => rawRecord(0x1, new Uint8Array(0));

function start(machine: MachineHeader = QEMU): Uint8Array[] {
  return [encodeToolstackHeader(), memoryStream(), encodeMemoryHeaders(machine)];
}

test("the stream's state formats are the engines' (QEMU_STATE 1 = qemu-state.ts, EMU_STATE 2 = the emu engine's)", () => {
  assert.equal(QEMU_STATE_FORMAT.CQST_DEVICE_STATE, QEMU_STATE_FORMAT_VERSION);
  assert.equal(EMU_STATE_FORMAT.V86_SAVE_STATE_WITH_CLOCK, EMU_STATE_FORMAT_VERSION);
});

test("QEMU_STATE round trip: a qemu save stream carries its state in 0x140, sub-header engine 3 format 1, then the blob", async () => {
  const ram = new Uint8Array(PAGES * PAGE_SIZE);
  ram[PAGE_SIZE + 7] = 0x5a;
  const blob = Uint8Array.from({ length: 5000 }, (_, i) => (i * 7) & 0xff);
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: QEMU });
  await w.writeMemoryStream();
  await writePages(w, ram, allPfns(PAGES));
  await w.writeEngineState(qemuState(blob));
  await w.writeMemoryEnd();
  await w.writeEnd();
  const bytes = sink.bytes();
  const records = await readAll(bytes, { expect: { engineId: "qemu", memoryBytes: PAGES * PAGE_SIZE }, requireEndOfSource: true });
  const machine = records.find((r) => r.kind === "machine-header");
  assert.equal(machine?.kind === "machine-header" ? machine.machine.engineId : undefined, "qemu");
  const state = records.find((r) => r.kind === "engine-state");
  assert.ok(state?.kind === "engine-state");
  assert.equal(state.state.engineId, "qemu");
  assert.equal(state.state.formatVersion, 1);
  assert.deepEqual(state.state.blob, blob);
  // The record's octets: type 0x140, body_length 8 + 5000, engine_id 3, format_version 1, the blob, padding.
  const at = state.offset;
  assert.deepEqual(bytes.subarray(at, at + 8), encodeRecordHeader(MEMORY_RECORD.QEMU_STATE, 8 + blob.length));
  assert.deepEqual(bytes.subarray(at + 8, at + 16), u32s(3, 1));
  assert.deepEqual(bytes.subarray(at + 16, at + 16 + blob.length), blob);
  // The machine header says qemu: engine_id 3.
  assert.deepEqual(bytes.subarray(16 + 8 + 24, 16 + 8 + 28), u32s(3));
  assert.equal(records.at(-1)?.kind, "end");
});

test("QEMU_STATE in a COLO stream: one per memory part, across checkpoints", async () => {
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: QEMU });
  await w.writeMemoryStream();
  await writePages(w, new Uint8Array(PAGES * PAGE_SIZE), allPfns(PAGES));
  await w.writeEngineState(qemuState(Uint8Array.of(1)));
  await w.writeCheckpoint();
  await w.writeCheckpointEnd();
  await w.writeCheckpointState("NEW");
  await w.writeMemoryStream();
  await w.writeEngineState(qemuState(Uint8Array.of(2)));
  await w.writeCheckpoint();
  await w.writeCheckpointEnd();
  await w.writeEnd();
  const states = (await readAll(sink.bytes())).flatMap((r) => (r.kind === "engine-state" ? [r.state] : []));
  assert.deepEqual(
    states.map((s) => [s.engineId, s.blob[0]]),
    [
      ["qemu", 1],
      ["qemu", 2],
    ],
  );
});

test("QEMU_STATE rejects: engine_id not 3, a machine not qemu, unknown format_version, each naming record, offset and rule", async () => {
  const stateAt = 16 + 8 + 40 + 8 + 8 + 8 * PAGES; // toolstack header, MEMORY_STREAM, memory headers, PAGE_DATA
  await rejects([...start(), allZero(), qemuRecord(1)], "BAD_FIELD", { message: new RegExp(`^stream offset ${stateAt}: memory record QEMU_STATE \\(0x00000140\\): engine_id 1, QEMU_STATE holds qemu \\(3\\) state`) });
  await rejects([...start(), allZero(), qemuRecord(0)], "BAD_FIELD", { message: /engine_id 0/ });
  await rejects([...start(), allZero(), qemuRecord(3, 2)], "BAD_FIELD", { message: /QEMU_STATE \(0x00000140\): unknown format_version 2/ });
  await rejects([...start(), allZero(), qemuRecord(3, 0)], "BAD_FIELD", { message: /unknown format_version 0/ });
  // QEMU_STATE in an emu stream, EMU_STATE in a qemu stream: the record of the other engine.
  await rejects([...start(EMU), allZero(), qemuRecord()], "BAD_FIELD", { message: /QEMU_STATE \(0x00000140\): QEMU_STATE in a stream for engine emu \(whose engine state is EMU_STATE\)/ });
  await rejects([...start(QEMU), allZero(), emuRecord()], "BAD_FIELD", { message: /EMU_STATE \(0x00000100\): EMU_STATE in a stream for engine qemu \(whose engine state is QEMU_STATE\)/ });
  // An EMU_STATE carrying qemu's engine id is still EMU_STATE's field error.
  await rejects([...start(QEMU), allZero(), emuRecord(3)], "BAD_FIELD", { message: /engine_id 3, EMU_STATE holds emu \(1\) state/ });
  // In a kvm stream (reserved engine): neither record is its state.
  await rejects([...start(machineHeader("kvm", PAGES * PAGE_SIZE, 2)), allZero(), qemuRecord()], "BAD_FIELD", { message: /QEMU_STATE in a stream for engine kvm$/ });
  // The EMU_STATE after a QEMU_STATE of the same part is refused for its engine, not skipped.
  await rejects([...start(), allZero(), qemuRecord(), emuRecord()], "BAD_FIELD", { message: /EMU_STATE in a stream for engine qemu/ });
});

test("QEMU_STATE rejects: bad lengths (before the body is read), its shadow, order", async () => {
  // No state octet: body_length 8.
  await rejects([...start(), allZero(), rawRecord(0x140, u32s(3, 1))], "BAD_LENGTH", { message: /QEMU_STATE \(0x00000140\): body_length 8, QEMU_STATE takes 9 to 33554440/ });
  // Larger than 32 MiB + 8, announced only: rejected from the header alone.
  const huge = encodeRecordHeader(0x140, 8 + MAX_BLOB_SIZE + 1);
  await rejects([...start(), allZero(), huge], "BAD_LENGTH", { message: /body_length 33554441, QEMU_STATE takes 9 to 33554440/ });
  // Shorter than announced: truncated.
  await rejects([...start(), allZero(), rawRecord(0x140, concatBytes(u32s(3, 1), BLOB), { bodyLength: 64 })], "TRUNCATED", { message: /QEMU_STATE/ });
  // The optional shadow of QEMU_STATE is not skipped.
  await rejects([...start(), allZero(), stateRecord(0x8000_0140, 3, 1)], "UNKNOWN_RECORD", { message: /shadows the mandatory QEMU_STATE/ });
  // The rest of the qemu range is unknown.
  await rejects([...start(), allZero(), stateRecord(0x141, 3, 1)], "UNKNOWN_RECORD", { message: /0x00000141/ });
  // Grammar: a second state, pages after it, END without it, the back channel.
  await rejects([...start(), allZero(), qemuRecord(), qemuRecord()], "OUT_OF_ORDER", { message: /a second engine state in one memory part/ });
  await rejects([...start(), allZero(), qemuRecord(), allZero()], "OUT_OF_ORDER", { message: /PAGE_DATA after the engine state/ });
  await rejects([...start(), allZero(), memoryEnd()], "OUT_OF_ORDER", { message: /END before the engine state/ });
  await rejects([...start(), allZero(), checkpoint()], "OUT_OF_ORDER", { message: /CHECKPOINT before the engine state/ });
  await rejects([encodeToolstackHeader(), memoryStream(), encodeMemoryHeaders(QEMU), qemuRecord()], "OUT_OF_ORDER", {
    message: /engine state on the back channel/,
    reader: { channel: "back-channel" },
  });
  // A valid one for contrast.
  const ok = await readAll(concatBytes(...start(), allZero(), qemuRecord(), memoryEnd(), rawRecord(0x0, new Uint8Array(0))));
  assert.equal(ok.at(-1)?.kind, "end");
});

test("the writer picks the state record by engine and refuses what a reader would reject", async () => {
  const image = async (machine: MachineHeader): Promise<StreamWriter> => {
    const w = new StreamWriter(new MemorySink(), { machine });
    await w.writeMemoryStream();
    await writePages(w, new Uint8Array(PAGES * PAGE_SIZE), allPfns(PAGES));
    return w;
  };
  const isError = (code: StreamErrorCode, message: RegExp) => (err: unknown) => err instanceof StreamError && err.code === code && message.test(err.message);
  await assert.rejects((await image(EMU)).writeEngineState(qemuState(BLOB)), isError("BAD_FIELD", /QEMU_STATE \(0x00000140\): state of engine qemu in a stream for engine emu/));
  await assert.rejects((await image(QEMU)).writeEngineState(emuState(BLOB)), isError("BAD_FIELD", /EMU_STATE \(0x00000100\): state of engine emu in a stream for engine qemu/));
  await assert.rejects((await image(QEMU)).writeEngineState({ engineId: "qemu", formatVersion: 2, blob: BLOB }), isError("BAD_FIELD", /unknown qemu state format_version 2/));
  await assert.rejects((await image(QEMU)).writeEngineState(qemuState(new Uint8Array(0))), isError("BAD_FIELD", /state of 0 octets/));
  const kvm = await image(machineHeader("kvm", PAGES * PAGE_SIZE, 2));
  await assert.rejects(kvm.writeEngineState({ engineId: "kvm", formatVersion: 1, blob: BLOB }), isError("BAD_FIELD", /engine state of kvm is not supported/));
  // After the refusals, the right state still goes in.
  const w = await image(QEMU);
  await assert.rejects(w.writeEngineState(emuState(BLOB)));
  await w.writeEngineState(qemuState(BLOB));
  await w.writeMemoryEnd();
});
