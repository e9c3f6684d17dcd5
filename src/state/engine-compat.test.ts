/**
 * ENGINE_COMPAT (docs/specs/stream.md §3.14): the record (octets, round
 * trip, every rejection of the reader and the writer) and the receiver's
 * check (machine-transfer.ts): a source whose engine state cannot load
 * here is refused at that record, naming both sides, before any page.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { EmuEngine } from "../engine/emu/emu-engine.js";
import { PAGE_SIZE, type EngineId, type MachineSpec } from "../engine/engine.js";
import { QemuEngine } from "../engine/qemu/qemu-engine.js";
import { FakeEngine } from "../engine/testing/fake-engine.js";
import { StreamError, type StreamErrorCode } from "./errors.js";
import { checkEngineCompat, receiveMachine, sendMachine, writeEngineCompat } from "./machine-transfer.js";
import { encodeMemoryHeaders, machineHeader, type MachineHeader } from "./memory-header.js";
import { readAll, StreamReader } from "./reader.js";
import { MAX_ENGINE_COMPAT_DESCRIPTOR, TOOLSTACK_RECORD } from "./record-types.js";
import { MemorySink } from "./sink.js";
import { concatBytes, emuMachine, emuState, qemuMachine, rawRecord, rejects, SAMPLE_VM_CONFIG, u32s } from "./testing.js";
import { encodeToolstackHeader } from "./toolstack-header.js";
import { allPfns, writePages } from "./write-pages.js";
import { StreamWriter } from "./writer.js";

const PAGES = 4;
const MIB = 2 ** 20;

const ascii = (text: string): Uint8Array => Uint8Array.from(text, (c) => c.charCodeAt(0));
const compatRecord = (engine: number, descriptor: Uint8Array, reserved = 0, type: number = TOOLSTACK_RECORD.ENGINE_COMPAT): Uint8Array =>
  rawRecord(type, concatBytes(u32s(engine, reserved), descriptor));
const memoryStream = (): Uint8Array => rawRecord(0x1, new Uint8Array(0));
const allZero = (): Uint8Array => rawRecord(0x1, concatBytes(u32s(PAGES, 0), ...Array.from({ length: PAGES }, (_, i) => u32s(i, 0xe000_0000))));
const emuStateRecord = (): Uint8Array => rawRecord(0x100, concatBytes(u32s(1, 1), Uint8Array.of(7)));
const end = (): Uint8Array => rawRecord(0x0, new Uint8Array(0));

/** Toolstack header, `before` records, then a complete emu save. */
function save(before: Uint8Array[], machine: MachineHeader = emuMachine(PAGES)): Uint8Array {
  return concatBytes(encodeToolstackHeader(), ...before, memoryStream(), encodeMemoryHeaders(machine), allZero(), emuStateRecord(), end(), end());
}

function isError(code: StreamErrorCode, message: RegExp): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof StreamError, String(err));
    assert.equal(err.code, code, err.message);
    assert.match(err.message, message);
    return true;
  };
}

function spec(memoryBytes = PAGES * PAGE_SIZE): MachineSpec {
  return { memoryBytes, kernel: new Uint8Array(0), cmdline: "", disks: [] };
}

function fake(compatibility: string | undefined, id: EngineId = "emu", memoryBytes = PAGES * PAGE_SIZE): FakeEngine {
  const e = new FakeEngine(spec(memoryBytes), id);
  e.compatibility = compatibility;
  return e;
}

test("ENGINE_COMPAT octets: type 0x80000201, u32 engine_id, u32 reserved, the descriptor, zero padding; read back", async () => {
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: qemuMachine(PAGES) });
  await w.writeVmConfig(SAMPLE_VM_CONFIG);
  await w.writeEngineCompat({ engineId: "qemu", descriptor: "qemu 7.2.22 pc" });
  const bytes = sink.bytes();
  const records = await readAll(concatBytes(bytes, memoryStream(), encodeMemoryHeaders(qemuMachine(PAGES)), allZero(), rawRecord(0x140, concatBytes(u32s(3, 1), Uint8Array.of(1))), end(), end()));
  const compat = records.find((r) => r.kind === "engine-compat");
  assert.ok(compat?.kind === "engine-compat");
  assert.deepEqual(compat.compat, { engineId: "qemu", descriptor: "qemu 7.2.22 pc" });
  assert.deepEqual(bytes.subarray(compat.offset), compatRecord(3, ascii("qemu 7.2.22 pc")));
  assert.deepEqual([...bytes.subarray(compat.offset, compat.offset + 16)], [0x01, 0x02, 0, 0x80, 22, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal((bytes.length - compat.offset) % 8, 0, "padded to 8");
  assert.equal(records.at(-1)?.kind, "end");
});

test("ENGINE_COMPAT reader rejects: engine_id, reserved, lengths, octets outside printable ASCII, shadow", async () => {
  // The record starts right after the toolstack header: offset 16.
  const at = /^stream offset 16: toolstack record ENGINE_COMPAT \(0x80000201\): /;
  await rejects(save([compatRecord(0, ascii("x"))]), "BAD_FIELD", { message: new RegExp(at.source + "unknown engine_id 0") });
  await rejects(save([compatRecord(4, ascii("x"))]), "BAD_FIELD", { message: /unknown engine_id 4/ });
  await rejects(save([compatRecord(1, ascii("x"), 1)]), "BAD_RESERVED", { message: new RegExp(at.source + "reserved field is not zero") });
  await rejects(save([compatRecord(1, new Uint8Array(0))]), "BAD_LENGTH", { message: new RegExp(at.source + "body_length 8, ENGINE_COMPAT takes 9 to 264") });
  await rejects(save([compatRecord(1, new Uint8Array(MAX_ENGINE_COMPAT_DESCRIPTOR + 1).fill(0x41))]), "BAD_LENGTH", { message: /body_length 265/ });
  await rejects(save([compatRecord(1, ascii("v86\n1"))]), "BAD_FIELD", { message: /descriptor octet 3 \(0x0a\) is not printable ASCII/ });
  await rejects(save([compatRecord(1, Uint8Array.of(0x76, 0x7f))]), "BAD_FIELD", { message: /octet 1 \(0x7f\)/ });
  await rejects(save([compatRecord(1, Uint8Array.of(0x76, 0xe9))]), "BAD_FIELD", { message: /octet 1 \(0xe9\)/ });
  await rejects(save([compatRecord(1, Uint8Array.of(0x76, 0x00))]), "BAD_FIELD", { message: /octet 1 \(0x00\)/ });
  // Its mandatory shadow 0x201 is never assigned: an unknown mandatory record.
  await rejects(save([compatRecord(1, ascii("x"), 0, 0x201)]), "UNKNOWN_RECORD", { message: /unknown mandatory record type 0x00000201/ });
  // 256 printable octets, space and tilde included, are fine.
  const longest = new Uint8Array(MAX_ENGINE_COMPAT_DESCRIPTOR).map((_, i) => 0x20 + (i % 95));
  const records = await readAll(save([compatRecord(1, longest)]), { requireEndOfSource: true });
  const compat = records.find((r) => r.kind === "engine-compat");
  assert.equal(compat?.kind === "engine-compat" ? compat.compat.descriptor : "", String.fromCharCode(...longest));
});

test("ENGINE_COMPAT reader rejects: a second one, one after the first MEMORY_STREAM, the back channel, a machine header of another engine", async () => {
  const rec = compatRecord(1, ascii("v86 0.5.462 state 2"));
  await rejects(save([rec, rec]), "OUT_OF_ORDER", { message: /a second ENGINE_COMPAT/ });
  // After the first memory part (between checkpoints) it is out of order; inside a memory part it is an unknown optional memory record, skipped.
  const colo = (...tail: Uint8Array[]): Uint8Array =>
    concatBytes(encodeToolstackHeader(), memoryStream(), encodeMemoryHeaders(emuMachine(PAGES)), allZero(), emuStateRecord(), rawRecord(0xe, new Uint8Array(0)), rawRecord(0x4, new Uint8Array(0)), ...tail);
  await rejects(colo(rec), "OUT_OF_ORDER", { message: /ENGINE_COMPAT after the first MEMORY_STREAM/ });
  const inside = concatBytes(encodeToolstackHeader(), memoryStream(), encodeMemoryHeaders(emuMachine(PAGES)), rec, allZero(), emuStateRecord(), end(), end());
  assert.deepEqual(
    (await readAll(inside)).map((r) => r.kind),
    ["memory-stream", "machine-header", "skipped", "page-data", "engine-state", "memory-end", "end"],
  );
  await rejects(concatBytes(encodeToolstackHeader(), rec), "OUT_OF_ORDER", { message: /ENGINE_COMPAT on the back channel/, reader: { channel: "back-channel" } });
  // The machine header must name the engine ENGINE_COMPAT named.
  const qemuRec = compatRecord(3, ascii("qemu 7.2.22 pc"));
  const machineAt = 16 + qemuRec.length + 8 + 24;
  await rejects(save([qemuRec]), "BAD_FIELD", { message: new RegExp(`^stream offset ${machineAt}: machine header: engine emu, but the stream's ENGINE_COMPAT named engine qemu`) });
  // Without one, any machine is fine (revision 5 streams).
  assert.equal((await readAll(save([]))).at(-1)?.kind, "end");
});

test("ENGINE_COMPAT writer refuses what a reader would reject, and writes nothing for it", async () => {
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: emuMachine(PAGES) });
  await assert.rejects(w.writeEngineCompat({ engineId: "qemu", descriptor: "qemu 7.2.22 pc" }), isError("BAD_FIELD", /ENGINE_COMPAT of engine qemu in a stream for engine emu/));
  await assert.rejects(w.writeEngineCompat({ engineId: "emu", descriptor: "" }), isError("BAD_LENGTH", /descriptor of 0 octets/));
  await assert.rejects(w.writeEngineCompat({ engineId: "emu", descriptor: "x".repeat(257) }), isError("BAD_LENGTH", /257 octets, allowed 1 to 256/));
  await assert.rejects(w.writeEngineCompat({ engineId: "emu", descriptor: "v86\t1" }), isError("BAD_FIELD", /character 3 \(U\+0009\) is not printable ASCII/));
  await assert.rejects(w.writeEngineCompat({ engineId: "emu", descriptor: "v86 \u00e9" }), isError("BAD_FIELD", /U\+00E9/));
  await assert.rejects(w.writeEngineCompat({ engineId: "emu", descriptor: "v86 \u{1f5a5}" }), isError("BAD_FIELD", /U\+1F5A5/));
  assert.equal(sink.length, 0);
  await w.writeEngineCompat({ engineId: "emu", descriptor: "v86 0.5.462 state 2" });
  await assert.rejects(w.writeEngineCompat({ engineId: "emu", descriptor: "v86 0.5.462 state 2" }), isError("OUT_OF_ORDER", /a second ENGINE_COMPAT/));
  await w.writeMemoryStream();
  const back = new StreamWriter(new MemorySink(), { machine: emuMachine(PAGES), channel: "back-channel" });
  await assert.rejects(back.writeEngineCompat({ engineId: "emu", descriptor: "v86" }), isError("OUT_OF_ORDER", /back channel/));
  // writeEngineCompat(engine) takes the engine's own; an engine that does not know it yet cannot write one.
  await assert.rejects(writeEngineCompat(fake(undefined, "qemu"), new StreamWriter(new MemorySink(), { machine: qemuMachine(PAGES) })), /does not know its compatibility yet/);
});

test("the engines' descriptors: emu from construction (v86 version, state format 2); qemu only once started", async () => {
  const emu = new EmuEngine({ ...spec(16 * MIB), kernelFormat: "multiboot" });
  assert.match(emu.compatibility, /^v86 0\.5\.\d+\S* state 2$/);
  assert.equal(emu.compatibility, new EmuEngine({ ...spec(16 * MIB), kernelFormat: "multiboot" }).compatibility);
  const qemu = new QemuEngine(spec(MIB));
  assert.equal(qemu.compatibility, undefined, "QEMU's version is known from the started process only");
  await qemu.destroy();
});

/** A save stream of a fake engine written as colo writes one: VM_CONFIG, ENGINE_COMPAT, the machine, END. */
async function saveOf(source: FakeEngine): Promise<Uint8Array> {
  source.ram()[PAGE_SIZE] = 0x11;
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: machineHeader(source.id, source.memoryBytes) });
  await w.writeVmConfig(SAMPLE_VM_CONFIG);
  await writeEngineCompat(source, w);
  await sendMachine(source, w, { live: false, pause: async () => {} });
  await w.writeEnd();
  return sink.bytes();
}

/** The receiver's side, as readMachine does it: VM_CONFIG read first, then the machine into `engine`. */
async function receive(bytes: Uint8Array, engine: FakeEngine): Promise<void> {
  const reader = new StreamReader(bytes);
  assert.equal((await reader.next())?.kind, "vm-config");
  await receiveMachine(engine, reader);
}

test("the receiver refuses another QEMU at ENGINE_COMPAT, naming both sides, before any page", async () => {
  const source = fake("qemu 7.2.22 pc", "qemu");
  await source.start({ paused: true });
  const bytes = await saveOf(source);
  const compatAt = (await readAll(bytes)).find((r) => r.kind === "engine-compat")?.offset;
  assert.ok(compatAt !== undefined && compatAt > 16);
  const dst = fake("qemu 8.0.0 pc", "qemu");
  await dst.start({ paused: true });
  await assert.rejects(
    receive(bytes, dst),
    isError(
      "MISMATCH",
      new RegExp(
        `^stream offset ${compatAt}: toolstack record ENGINE_COMPAT \\(0x80000201\\): the source runs qemu 7\\.2\\.22 pc, this host qemu 8\\.0\\.0 pc: a device state from one cannot be loaded by the other$`,
      ),
    ),
  );
  assert.equal(dst.ram()[PAGE_SIZE], 0, "no page was applied");
  // Another machine type is another QEMU machine.
  const q35 = fake("qemu 7.2.22 q35", "qemu");
  await q35.start({ paused: true });
  await assert.rejects(receive(bytes, q35), isError("MISMATCH", /the source runs qemu 7\.2\.22 pc, this host qemu 7\.2\.22 q35/));
  // The same QEMU and machine: the machine loads.
  const same = fake("qemu 7.2.22 pc", "qemu");
  await same.start({ paused: true });
  await receive(bytes, same);
  assert.equal(same.ram()[PAGE_SIZE], 0x11);
});

test("the receiver refuses another engine (emu vs qemu) at ENGINE_COMPAT, and another v86 or state format", async () => {
  const emuSource = fake("v86 0.5.462 state 2", "emu");
  await emuSource.start({ paused: true });
  const bytes = await saveOf(emuSource);
  const qemuHost = fake("qemu 7.2.22 pc", "qemu");
  await qemuHost.start({ paused: true });
  await assert.rejects(
    receive(bytes, qemuHost),
    isError("MISMATCH", /ENGINE_COMPAT \(0x80000201\): the source runs engine emu \(v86 0\.5\.462 state 2\), this host engine qemu \(qemu 7\.2\.22 pc\): the state of one engine cannot be loaded by the other$/),
  );
  const otherV86 = fake("v86 0.5.500 state 2", "emu");
  await otherV86.start({ paused: true });
  await assert.rejects(receive(bytes, otherV86), isError("MISMATCH", /the source runs v86 0\.5\.462 state 2, this host v86 0\.5\.500 state 2/));
  const otherFormat = fake("v86 0.5.462 state 1", "emu");
  await otherFormat.start({ paused: true });
  await assert.rejects(receive(bytes, otherFormat), isError("MISMATCH", /state 2, this host v86 0\.5\.462 state 1/));
  // A receiving engine that does not know its own descriptor (a qemu not started) cannot check: an internal error, not a pass.
  await assert.rejects(receive(bytes, fake(undefined, "emu")), isError("INTERNAL", /not started/));
  assert.throws(() => checkEngineCompat(fake(undefined, "qemu"), { engineId: "qemu", descriptor: "qemu 7.2.22 pc" }, 16), isError("INTERNAL", /not started/));
});

test("without ENGINE_COMPAT (a revision-5 stream) the engine is refused at the machine header, with both engines named", async () => {
  const sink = new MemorySink();
  const source = fake("qemu 7.2.22 pc", "qemu");
  await source.start({ paused: true });
  const w = new StreamWriter(sink, { machine: machineHeader("qemu", source.memoryBytes) });
  await sendMachine(source, w, { live: false, pause: async () => {} });
  await w.writeEnd();
  const dst = fake("v86 0.5.462 state 2", "emu");
  await dst.start({ paused: true });
  // MEMORY_STREAM at 16, the memory headers at 24, the machine header at 48.
  await assert.rejects(
    receiveMachine(dst, new StreamReader(sink.bytes())),
    isError("MISMATCH", /^stream offset 48: machine header: the source runs engine qemu, this VM engine emu: the state of one engine cannot be loaded by the other$/),
  );
  const bigger = fake("qemu 7.2.22 pc", "qemu", 2 * PAGES * PAGE_SIZE);
  await bigger.start({ paused: true });
  await assert.rejects(receiveMachine(bigger, new StreamReader(sink.bytes())), isError("MISMATCH", /machine header: the stream's machine has [\d.]+ MiB of memory, this VM [\d.]+ MiB/));
  // Matching: loads.
  const same = fake("anything", "qemu");
  await same.start({ paused: true });
  assert.equal((await receiveMachine(same, new StreamReader(sink.bytes()))).closedBy, "end");
});

test("emu state in an emu stream still loads with a matching ENGINE_COMPAT (the record changes nothing else)", async () => {
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: emuMachine(PAGES) });
  await w.writeVmConfig(SAMPLE_VM_CONFIG);
  await w.writeEngineCompat({ engineId: "emu", descriptor: "fake emu 1" });
  await w.writeMemoryStream();
  await writePages(w, new Uint8Array(PAGES * PAGE_SIZE).fill(3), allPfns(PAGES));
  await w.writeEngineState(emuState(Uint8Array.of(9)));
  await w.writeMemoryEnd();
  await w.writeEnd();
  const dst = new FakeEngine(spec(), "emu");
  await dst.start({ paused: true });
  await receive(sink.bytes(), dst);
  assert.equal(dst.ram()[0], 3);
});
