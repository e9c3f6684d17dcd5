import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { test } from "node:test";
import { PAGE_SIZE } from "../engine/engine.js";
import { StreamError, type StreamErrorCode } from "./errors.js";
import { machineHeader } from "./memory-header.js";
import { PAGE_TYPE } from "./pfn-entry.js";
import { readAll } from "./reader.js";
import { MemorySink, teeSink, writableSink, type ByteSink } from "./sink.js";
import { concatBytes, emuMachine, emuState, rawRecord, SAMPLE_VM_CONFIG } from "./testing.js";
import { encodeToolstackHeader } from "./toolstack-header.js";
import { allPfns, writePages } from "./write-pages.js";
import { StreamWriter } from "./writer.js";

const MACHINE = emuMachine(4);

function isStreamError(code: StreamErrorCode, message?: RegExp): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof StreamError, String(err));
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return true;
  };
}

async function fullImage(w: StreamWriter): Promise<void> {
  await w.writeMemoryStream();
  await writePages(w, new Uint8Array(4 * PAGE_SIZE), allPfns(4));
  await w.writeEngineState(emuState(new Uint8Array(1)));
}

test("the writer refuses records out of order and writes nothing for them", async () => {
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: MACHINE });
  const page = { pfns: Uint32Array.of(0), types: Uint8Array.of(PAGE_TYPE.ZERO), data: new Uint8Array(0) };
  await assert.rejects(w.writePageData(page), isStreamError("OUT_OF_ORDER", /memory record outside a memory part|toolstack layer/));
  await assert.rejects(w.writeEnd(), isStreamError("OUT_OF_ORDER", /END before any complete memory part/));
  await assert.rejects(w.writeCheckpointEnd(), isStreamError("OUT_OF_ORDER"));
  assert.equal(sink.length, 0, "not even the toolstack header was written");
  await w.writeMemoryStream();
  await assert.rejects(w.writeCheckpoint(), isStreamError("OUT_OF_ORDER", /before the engine state/));
  await w.writePageData({ pfns: Uint32Array.of(0, 1), types: Uint8Array.of(PAGE_TYPE.ZERO, PAGE_TYPE.ZERO), data: new Uint8Array(0) });
  await w.writeEngineState(emuState(new Uint8Array(1)));
  await assert.rejects(w.writeMemoryEnd(), isStreamError("OUT_OF_ORDER", /sent 2 of 4 pages \(pfn 2 missing\)/));
  await assert.rejects(w.writePageData(page), isStreamError("OUT_OF_ORDER", /after the engine state/));
  await assert.rejects(w.writeDirtyPfnList(Uint32Array.of(1)), isStreamError("OUT_OF_ORDER", /back channel/));
});

test("the writer refuses bad pages, states and lists before writing", async () => {
  const w = new StreamWriter(new MemorySink(), { machine: MACHINE });
  await w.writeMemoryStream();
  const before = w.bytesWritten;
  const zero = (pfns: number[]) => ({ pfns: Uint32Array.from(pfns), types: new Uint8Array(pfns.length).fill(PAGE_TYPE.ZERO), data: new Uint8Array(0) });
  await assert.rejects(w.writePageData(zero([4])), isStreamError("BAD_PFN", /outside guest memory/));
  await assert.rejects(w.writePageData(zero([1, 1])), isStreamError("BAD_PFN", /twice/));
  await assert.rejects(w.writePageData(zero([])), isStreamError("BAD_PFN", /0 pages/));
  await assert.rejects(w.writePageData({ pfns: Uint32Array.of(0), types: Uint8Array.of(0xf), data: new Uint8Array(0) }), isStreamError("BAD_PFN"));
  await assert.rejects(w.writePageData({ pfns: Uint32Array.of(0), types: Uint8Array.of(0), data: new Uint8Array(10) }), isStreamError("BAD_PFN", /octets of page contents/));
  await assert.rejects(w.writeEngineState({ engineId: "kvm", formatVersion: 1, blob: new Uint8Array(1) }), isStreamError("BAD_FIELD"));
  await assert.rejects(w.writeEngineState({ engineId: "emu", formatVersion: 9, blob: new Uint8Array(1) }), isStreamError("BAD_FIELD"));
  await assert.rejects(w.writeEngineState(emuState(new Uint8Array(0))), isStreamError("BAD_FIELD"));
  await assert.rejects(w.writePrecopyRound({ round: 0, final: false, pageCount: 5 }), isStreamError("BAD_FIELD"));
  await assert.rejects(writePages(w, new Uint8Array(3 * PAGE_SIZE), [0]), isStreamError("MISMATCH"));
  await assert.rejects(writePages(w, new Uint8Array(4 * PAGE_SIZE), [0.5]), isStreamError("BAD_PFN"));
  assert.equal(w.bytesWritten, before);
  // Still usable.
  await writePages(w, new Uint8Array(4 * PAGE_SIZE), allPfns(4));

  const back = new StreamWriter(new MemorySink(), { machine: MACHINE, channel: "back-channel" });
  await back.writeMemoryStream();
  await assert.rejects(back.writeDirtyPfnList(Uint32Array.of(2, 1)), isStreamError("BAD_PFN", /ascending/));
  await back.writeDirtyPfnList(Uint32Array.of(1));
  await assert.rejects(back.writeDirtyPfnList(Uint32Array.of(1)), isStreamError("BAD_PFN", /ascending/));
  await assert.rejects(back.writeCheckpointState("NEW"), isStreamError("OUT_OF_ORDER"));
});

test("machine headers are validated when built", () => {
  assert.throws(() => machineHeader("emu", 4096, 2), isStreamError("BAD_FIELD", /exactly 1 vCPU/));
  assert.throws(() => machineHeader("emu", 4097), isStreamError("BAD_FIELD"));
  assert.throws(() => machineHeader("kvm", 2 ** 45, 4), isStreamError("BAD_FIELD", /2\^44/));
  assert.deepEqual(machineHeader("kvm", 2 ** 30, 8), { engineId: "kvm", memoryBytes: 2 ** 30, vcpuCount: 8, pageCount: 2 ** 18 });
});

test("calls issued without awaiting are written in call order", async () => {
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: MACHINE });
  const calls = [
    w.writeMemoryStream(),
    writePages(w, new Uint8Array(4 * PAGE_SIZE).fill(1), allPfns(4)),
    w.writeEngineState(emuState(new Uint8Array(1))),
    w.writeMemoryEnd(),
    w.writeEnd(),
  ];
  await Promise.all(calls);
  const records = await readAll(sink.bytes(), { requireEndOfSource: true });
  assert.deepEqual(records.map((r) => r.kind), ["memory-stream", "machine-header", "page-data", "engine-state", "memory-end", "end"]);
});

test("a failing sink fails the call and every later one", async () => {
  let writes = 0;
  const sink: ByteSink = {
    write: () => (++writes >= 2 ? Promise.reject(new Error("disk full")) : Promise.resolve()),
  };
  const w = new StreamWriter(sink, { machine: MACHINE });
  await w.writeMemoryStream();
  const failure = await writePages(w, new Uint8Array(4 * PAGE_SIZE).fill(3), allPfns(4)).catch((err: unknown) => err);
  assert.ok(failure instanceof StreamError && failure.code === "IO" && /disk full/.test(failure.message), String(failure));
  await assert.rejects(w.writeEnd(), (err) => err === failure);
});

test("writableSink rejects writes to a closed stream and waits for drain", async () => {
  const closed = new PassThrough();
  closed.destroy();
  await assert.rejects(writableSink(closed).write(new Uint8Array(1)), isStreamError("IO", /closed/));

  const slow = new PassThrough({ highWaterMark: 4 });
  const sink = writableSink(slow);
  let drained = false;
  const pending = sink.write(new Uint8Array(100)).then(() => {
    drained = true;
  });
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(drained, false, "write() resolved before the stream drained");
  slow.resume();
  await pending;
  assert.equal(drained, true);

  const dying = new PassThrough({ highWaterMark: 4 });
  dying.on("error", () => undefined);
  const write = writableSink(dying).write(new Uint8Array(100));
  dying.destroy(new Error("EPIPE"));
  await assert.rejects(write, isStreamError("IO"));
});

test("the writer reports a complete image once the first memory part is closed", async () => {
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: MACHINE });
  await fullImage(w);
  assert.equal(w.complete, false);
  await w.writeMemoryEnd();
  assert.equal(w.complete, true);
  await w.writeEnd();
  assert.equal((await readAll(sink.bytes())).length, 6);
});

test("writeVmConfig: fields checked before writing; first, once, image streams only", async () => {
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: MACHINE });
  const refused: [{ path: string; text: string }, StreamErrorCode, RegExp][] = [
    [{ path: "guest.cfg", text: "x" }, "BAD_FIELD", /not absolute/],
    [{ path: "", text: "x" }, "BAD_FIELD", /path_length 0/],
    [{ path: "/" + "\u00e9".repeat(2048), text: "x" }, "BAD_FIELD", /path_length 4097, allowed 1 to 4096/], // octets count, not characters
    [{ path: "/g\0", text: "x" }, "BAD_FIELD", /path has a NUL octet at 2/],
    [{ path: "/g\ud800", text: "x" }, "BAD_FIELD", /path is not well-formed Unicode/],
    [{ path: "/g", text: "" }, "BAD_LENGTH", /config text of 0 octets/],
    [{ path: "/g", text: "\u00e9".repeat(32768) + "x" }, "BAD_LENGTH", /config text of 65537 octets/],
    [{ path: "/g", text: "a\0" }, "BAD_FIELD", /config text has a NUL octet at 1/],
    [{ path: "/g", text: "\udc00name" }, "BAD_FIELD", /config text is not well-formed Unicode/],
    [{ path: 7 as unknown as string, text: "x" }, "BAD_FIELD", /path is not a string/],
  ];
  for (const [config, code, message] of refused) {
    await assert.rejects(w.writeVmConfig(config), isStreamError(code, message), JSON.stringify(config));
  }
  assert.equal(sink.length, 0, "not even the toolstack header was written");
  // The longest path and text.
  const longest = { path: "/" + "\u00e9".repeat(2047) + "p", text: "\u00e9".repeat(32768) };
  await w.writeVmConfig(longest);
  await assert.rejects(w.writeVmConfig(SAMPLE_VM_CONFIG), isStreamError("OUT_OF_ORDER", /a second VM_CONFIG/));
  await fullImage(w);
  await assert.rejects(w.writeVmConfig(SAMPLE_VM_CONFIG), isStreamError("OUT_OF_ORDER", /inside a memory part/));
  await w.writeMemoryEnd();
  await assert.rejects(w.writeVmConfig(SAMPLE_VM_CONFIG), isStreamError("OUT_OF_ORDER", /after the first MEMORY_STREAM/));
  await w.writeEnd();
  const records = await readAll(sink.bytes(), { requireEndOfSource: true });
  assert.deepEqual(records[0], { kind: "vm-config", offset: 16, config: { format: 1, ...longest } });

  const back = new StreamWriter(new MemorySink(), { machine: MACHINE, channel: "back-channel" });
  await assert.rejects(back.writeVmConfig(SAMPLE_VM_CONFIG), isStreamError("OUT_OF_ORDER", /VM_CONFIG on the back channel/));
});

test("VM_CONFIG octets: u32 format 1, u32 path_length, path, text, zero padding", async () => {
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine: MACHINE });
  await w.writeVmConfig({ path: "/vm/\u00e9.cfg", text: 'name = "g"\n' });
  const path = new TextEncoder().encode("/vm/\u00e9.cfg");
  const text = new TextEncoder().encode('name = "g"\n');
  const head = new Uint8Array(8);
  new DataView(head.buffer).setUint32(0, 1, true);
  new DataView(head.buffer).setUint32(4, path.length, true);
  assert.deepEqual(sink.bytes(), concatBytes(encodeToolstackHeader(), rawRecord(0x200, concatBytes(head, path, text))));
  assert.deepEqual([...sink.bytes().subarray(16, 32)], [0, 2, 0, 0, 29, 0, 0, 0, 1, 0, 0, 0, 10, 0, 0, 0]);
});

test("teeSink: both sinks get every chunk in order; a write waits for both and fails when either fails", async () => {
  const a = new MemorySink();
  const b = new MemorySink();
  const writer = new StreamWriter(teeSink(a, b), { machine: MACHINE });
  await writer.writeVmConfig(SAMPLE_VM_CONFIG);
  await writer.writeMemoryStream();
  await writePages(writer, new Uint8Array(4 * PAGE_SIZE).fill(3), allPfns(4));
  await writer.writeEngineState(emuState(new Uint8Array([1])));
  await writer.writeMemoryEnd();
  await writer.writeEnd();
  assert.deepEqual(b.bytes(), a.bytes());
  assert.equal((await readAll(b.bytes(), { requireEndOfSource: true })).at(-1)?.kind, "end");

  let release: () => void = () => undefined;
  const slow: ByteSink = { write: () => new Promise<void>((r) => (release = r)) };
  let done = false;
  const pending = teeSink(new MemorySink(), slow)
    .write(new Uint8Array(8))
    .then(() => (done = true));
  await new Promise((r) => setImmediate(r));
  assert.equal(done, false, "waits for the slower sink");
  release();
  await pending;
  const broken: ByteSink = { write: () => Promise.reject(new Error("disk full")) };
  await assert.rejects(teeSink(new MemorySink(), broken).write(new Uint8Array(8)), /disk full/);
});
