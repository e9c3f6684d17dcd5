/**
 * Every rejection of docs/specs/stream.md §7, on hand-made streams: each
 * case changes one thing in an otherwise valid stream.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { PAGE_SIZE } from "../engine/engine.js";
import { StreamError, type StreamErrorCode } from "./errors.js";
import { encodeMemoryHeaders, machineHeader, type MachineHeader } from "./memory-header.js";
import { readAll, StreamReader } from "./reader.js";
import { concatBytes, rawRecord, rejects, saveStream, u32s } from "./testing.js";
import { encodeToolstackHeader } from "./toolstack-header.js";

const PAGES = 4;
const MACHINE = machineHeader("emu", PAGES * PAGE_SIZE, 1);
const EMPTY = new Uint8Array(0);

/** A pfn entry: type in bits 63-60, `high` in bits 51-32 and reserved bits as given. */
function pfnEntry(pfn: number, type = 0, extraHigh = 0): Uint8Array {
  return u32s(pfn, ((type << 28) | extraHigh) >>> 0);
}

function utf8(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

function page(fill: number): Uint8Array {
  return new Uint8Array(PAGE_SIZE).fill(fill);
}

const rec = {
  memoryStream: () => rawRecord(0x1, EMPTY),
  end: () => rawRecord(0x0, EMPTY),
  checkpointEnd: () => rawRecord(0x4, EMPTY),
  checkpointState: (id: number) => rawRecord(0x5, u32s(id)),
  emulatorContext: (id: number, index: number) => rawRecord(0x3, concatBytes(u32s(id, index), new Uint8Array([1, 2, 3]))),
  memoryEnd: () => rawRecord(0x0, EMPTY),
  checkpoint: () => rawRecord(0xe, EMPTY),
  /** PAGE_DATA from entries; NORMAL entries take the next page of `contents`. */
  pageData: (entries: Uint8Array[], contents: Uint8Array[] = [], count = entries.length) =>
    rawRecord(0x1, concatBytes(u32s(count, 0), ...entries, ...contents)),
  allZero: () => rawRecord(0x1, concatBytes(u32s(PAGES, 0), ...Array.from({ length: PAGES }, (_, i) => pfnEntry(i, 0xe)))),
  emuState: (engine = 1, format = 1, blob: Uint8Array = new Uint8Array([7, 7, 7, 7, 7, 7, 7, 7])) =>
    rawRecord(0x100, concatBytes(u32s(engine, format), blob)),
  dirty: (...pfns: number[]) => rawRecord(0xf, concatBytes(...pfns.map((p) => pfnEntry(p)))),
  /** VM_CONFIG from raw path and text octets; path_length defaults to the path's length. */
  vmConfig: (path: Uint8Array = utf8("/vm/g.cfg"), text: Uint8Array = utf8('name = "g"\n'), format = 1, pathLength = path.length) =>
    rawRecord(0x200, concatBytes(u32s(format, pathLength), path, text)),
};

function start(machine: MachineHeader = MACHINE): Uint8Array[] {
  return [encodeToolstackHeader(), rec.memoryStream(), encodeMemoryHeaders(machine)];
}

/** A valid save stream built from parts: header, memory headers, `pages`, state, ENDs. */
function save(pages: Uint8Array[] = [rec.allZero()]): Uint8Array[] {
  return [...start(), ...pages, rec.emuState(), rec.memoryEnd(), rec.end()];
}

test("the hand-made base streams are valid", async () => {
  const records = await readAll(concatBytes(...save([rec.pageData([pfnEntry(0), pfnEntry(1, 0xe), pfnEntry(2), pfnEntry(3, 0xe)], [page(1), page(2)])])), {
    requireEndOfSource: true,
  });
  assert.equal(records.at(-1)?.kind, "end");
  const colo = [
    ...start(), rec.allZero(), rec.emuState(), rec.checkpoint(), rec.emulatorContext(1, 0), rec.checkpointEnd(),
    rec.checkpointState(0), rec.memoryStream(), rec.emuState(), rec.checkpoint(), rec.checkpointEnd(), rec.end(),
  ];
  assert.equal((await readAll(concatBytes(...colo))).at(-1)?.kind, "end");
  const back = [encodeToolstackHeader(), rec.checkpointState(1), rec.memoryStream(), encodeMemoryHeaders(MACHINE), rec.dirty(0, 2), rec.dirty(3), rec.checkpoint(), rec.checkpointState(2), rec.end()];
  assert.equal((await readAll(concatBytes(...back), { channel: "back-channel" })).at(-1)?.kind, "end");
});

test("bad toolstack header: ident, Xen image, version, options", async () => {
  const h = encodeToolstackHeader();
  const wrongIdent = h.slice();
  wrongIdent[0] = 0x58;
  await rejects([wrongIdent, ...save().slice(1)], "BAD_MAGIC", { message: /stream offset 0: toolstack header: ident/ });
  const xen = h.slice();
  xen.set(new TextEncoder().encode("LibxlFmt"));
  await rejects([xen], "BAD_MAGIC", { message: /Xen libxl image/ });
  await rejects(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "BAD_MAGIC");
  const v2 = h.slice();
  v2[8] = 2;
  await rejects([v2, ...save().slice(1)], "BAD_VERSION");
  const bigEndian = h.slice();
  bigEndian[12] = 1;
  await rejects([bigEndian, ...save().slice(1)], "BAD_RESERVED", { message: /big-endian/ });
  const option = h.slice();
  option[15] = 0x80;
  await rejects([option, ...save().slice(1)], "BAD_RESERVED");
});

test("bad memory image header: marker, ident, version, options, reserved", async () => {
  const mutate = async (at: number, value: number, code: StreamErrorCode, message?: RegExp): Promise<void> => {
    const headers = encodeMemoryHeaders(MACHINE);
    headers[at] = value;
    const parts = save();
    parts[2] = headers;
    await rejects(parts, code, { message });
  };
  await mutate(3, 0xfe, "BAD_MAGIC", /stream offset 24: memory image header: marker/);
  await mutate(8, 0x58, "BAD_MAGIC", /ident/);
  await mutate(12, 3, "BAD_VERSION");
  await mutate(16, 1, "BAD_RESERVED");
  await mutate(17, 1, "BAD_RESERVED");
  await mutate(20, 1, "BAD_RESERVED");
  const xenf = encodeMemoryHeaders(MACHINE);
  xenf.set(new TextEncoder().encode("XENF"), 8);
  await rejects([...start().slice(0, 2), xenf], "BAD_MAGIC", { message: /Xen libxc image/ });
});

test("bad machine header: engine, page shift, memory size, vCPUs, reserved", async () => {
  const mutate = async (edit: (view: DataView) => void, code: StreamErrorCode, message?: RegExp): Promise<void> => {
    const headers = encodeMemoryHeaders(MACHINE);
    edit(new DataView(headers.buffer, 24));
    const parts = save();
    parts[2] = headers;
    await rejects(parts, code, { message });
  };
  await mutate((v) => v.setUint32(0, 0, true), "BAD_FIELD", /stream offset 48: machine header: unknown engine_id 0/);
  await mutate((v) => v.setUint32(0, 3, true), "BAD_FIELD");
  await mutate((v) => v.setUint8(4, 13), "BAD_FIELD", /page_shift/);
  await mutate((v) => v.setUint8(5, 1), "BAD_RESERVED");
  await mutate((v) => v.setUint16(6, 0, true), "BAD_FIELD", /vcpu_count/);
  await mutate((v) => v.setUint16(6, 2, true), "BAD_FIELD", /emu engine has exactly 1/);
  await mutate((v) => v.setBigUint64(8, 0n, true), "BAD_FIELD", /memory_bytes/);
  await mutate((v) => v.setBigUint64(8, BigInt(PAGES * PAGE_SIZE + 1), true), "BAD_FIELD", /memory_bytes/);
  await mutate((v) => v.setBigUint64(8, 2n ** 44n + 4096n, true), "BAD_FIELD", /2\^44/);
  await mutate((v) => v.setBigUint64(8, 2n ** 64n - 1n, true), "BAD_FIELD", /2\^44/);
});

test("machine header differing from the receiving VM: engine, memory size, vCPUs", async () => {
  const bytes = concatBytes(...save());
  await rejects(bytes, "MISMATCH", { message: /engine emu, this VM runs on kvm/, reader: { expect: { engineId: "kvm" } } });
  await rejects(bytes, "MISMATCH", { message: /16384 octets of memory, this VM has 32768/, reader: { expect: { memoryBytes: 8 * PAGE_SIZE } } });
  await rejects(bytes, "MISMATCH", { reader: { expect: { vcpuCount: 2 } } });
  assert.equal((await readAll(bytes, { expect: { engineId: "emu", memoryBytes: PAGES * PAGE_SIZE, vcpuCount: 1 } })).at(-1)?.kind, "end");
});

test("unknown mandatory records are rejected in both layers; kvm state is unsupported", async () => {
  // Xen's EMULATOR_XENSTORE_DATA is not ours.
  await rejects([encodeToolstackHeader(), rawRecord(0x2, new Uint8Array(8))], "UNKNOWN_RECORD", { message: /stream offset 16: toolstack record unknown \(0x00000002\)/ });
  await rejects([encodeToolstackHeader(), rawRecord(0x7fffffff, EMPTY)], "UNKNOWN_RECORD");
  // Memory-layer types at the toolstack level are unknown there.
  await rejects([encodeToolstackHeader(), rec.checkpoint()], "UNKNOWN_RECORD");
  // Xen's HVM_CONTEXT in the memory layer.
  await rejects([...start(), rawRecord(0x9, new Uint8Array(16))], "UNKNOWN_RECORD", { message: /memory record unknown \(0x00000009\)/ });
  await rejects([...start(), rawRecord(0x101, new Uint8Array(16))], "UNKNOWN_RECORD");
  await rejects([...start(), rawRecord(0x110, new Uint8Array(16))], "UNSUPPORTED_RECORD", { message: /KVM_VCPU_REGS/ });
  await rejects([...start(), rawRecord(0x13f, new Uint8Array(16))], "UNSUPPORTED_RECORD");
});

test("unknown optional records are skipped in both layers, even past many octets", async () => {
  const optional = rawRecord(0x8000_0042, new Uint8Array(100_003).fill(1));
  const parts = [...start(), optional, rec.allZero(), rec.emuState(), rec.memoryEnd(), optional, rec.end()];
  const records = await readAll(concatBytes(...parts), { requireEndOfSource: true });
  assert.deepEqual(
    records.filter((r) => r.kind === "skipped").map((r) => (r.kind === "skipped" ? r.layer : "")),
    ["memory", "toolstack"],
  );
  // An optional type that shadows a mandatory one (bit 31 of PAGE_DATA, MEMORY_STREAM, ...) is corrupt.
  await rejects([...start(), rawRecord(0x8000_0001, new Uint8Array(8))], "UNKNOWN_RECORD", { message: /shadows the mandatory PAGE_DATA/ });
  await rejects([...start(), rawRecord(0x8000_0120, new Uint8Array(8))], "UNKNOWN_RECORD", { message: /shadows/ });
  await rejects([encodeToolstackHeader(), rawRecord(0x8000_0003, new Uint8Array(8))], "UNKNOWN_RECORD", { message: /shadows the mandatory EMULATOR_CONTEXT/ });
  // Skipping still checks the padding.
  const badPad = rawRecord(0x8000_0042, new Uint8Array(5), { padding: new Uint8Array([0, 0, 1]) });
  await rejects([...start(), badPad], "BAD_PADDING");
});

test("body lengths: over 64 MiB, outside the type's bounds, rejected before the body is read", async () => {
  // No body follows: a reader that tried to read it would report TRUNCATED instead.
  const header = (type: number, length: number): Uint8Array => u32s(type, length);
  await rejects([encodeToolstackHeader(), header(0x8000_0001, 64 * 2 ** 20 + 1)], "BAD_LENGTH", { message: /exceeds the limit/ });
  await rejects([encodeToolstackHeader(), header(0x8000_0001, 0xffff_ffff)], "BAD_LENGTH");
  await rejects([...start(), header(0x1, 8 + 1024 * 8 + 1024 * PAGE_SIZE + 8)], "BAD_LENGTH", { message: /PAGE_DATA takes 16 to 4202504/ });
  await rejects([...start(), header(0x100, 8 + 32 * 2 ** 20 + 1)], "BAD_LENGTH");
  await rejects([...start(), header(0xf, 65537 * 8)], "BAD_LENGTH");
  await rejects([encodeToolstackHeader(), header(0x1, 8)], "BAD_LENGTH", { message: /MEMORY_STREAM takes exactly 0/ });
  await rejects([encodeToolstackHeader(), header(0x0, 1)], "BAD_LENGTH");
  await rejects([encodeToolstackHeader(), header(0x5, 8)], "BAD_LENGTH");
  await rejects([encodeToolstackHeader(), header(0x3, 8)], "BAD_LENGTH");
  await rejects([...start(), header(0xe, 4)], "BAD_LENGTH");
  await rejects([...start(), header(0x100, 8)], "BAD_LENGTH");
  await rejects([...start(), header(0x8000_0200, 8)], "BAD_LENGTH");
});

test("PAGE_DATA: count and body length must agree", async () => {
  await rejects(save([rec.pageData([], [], 0)]), "BAD_LENGTH"); // body of 8 is below the minimum
  await rejects(save([rawRecord(0x1, concatBytes(u32s(0, 0), pfnEntry(0)))]), "BAD_FIELD", { message: /count 0/ });
  await rejects(save([rawRecord(0x1, concatBytes(u32s(1025, 0), pfnEntry(0)))]), "BAD_FIELD", { message: /count 1025/ });
  // count 2, one pfn entry.
  await rejects(save([rawRecord(0x1, concatBytes(u32s(2, 0), pfnEntry(0, 0xe)))]), "BAD_LENGTH");
  // Two NORMAL pages announced, one page of data.
  await rejects(save([rec.pageData([pfnEntry(0), pfnEntry(1)], [page(1)])]), "BAD_LENGTH", { message: /need/ });
  // One NORMAL page, data for two.
  await rejects(save([rec.pageData([pfnEntry(0)], [page(1), page(2)])]), "BAD_LENGTH");
  // A ZERO page with contents after it.
  await rejects(save([rec.pageData([pfnEntry(0, 0xe)], [page(0)])]), "BAD_LENGTH");
  // Reserved u32 after count.
  await rejects(save([rawRecord(0x1, concatBytes(u32s(1, 1), pfnEntry(0, 0xe)))]), "BAD_RESERVED");
});

test("PAGE_DATA: pfns outside RAM, invalid types, reserved bits, duplicates", async () => {
  await rejects(save([rec.pageData([pfnEntry(PAGES, 0xe)])]), "BAD_PFN", { message: /pfn 4 is outside guest memory \(4 pages\)/ });
  await rejects(save([rec.pageData([pfnEntry(0, 0xe, 0x1)])]), "BAD_PFN", { message: /pfn 4294967296/ });
  await rejects(save([rec.pageData([pfnEntry(0, 0xf)])]), "BAD_PFN", { message: /XTAB/ });
  await rejects(save([rec.pageData([pfnEntry(0, 0x1)], [page(1)])]), "BAD_PFN", { message: /page type 0x1/ });
  await rejects(save([rec.pageData([pfnEntry(0, 0xd)])]), "BAD_PFN");
  await rejects(save([rec.pageData([pfnEntry(0, 0xe, 0x0010_0000)])]), "BAD_RESERVED", { message: /bits 59-52/ });
  await rejects(save([rec.pageData([pfnEntry(2, 0xe), pfnEntry(1, 0xe), pfnEntry(2, 0xe)])]), "BAD_PFN", { message: /appears twice/ });
});

test("non-zero padding is rejected", async () => {
  const state = rawRecord(0x100, concatBytes(u32s(1, 1), new Uint8Array([1, 2, 3])), { padding: new Uint8Array([0, 0, 0, 0, 9]) });
  await rejects([...start(), rec.allZero(), state], "BAD_PADDING", { message: /EMU_STATE/ });
  const control = rawRecord(0x5, u32s(0), { padding: u32s(1) });
  await rejects([...start(), rec.allZero(), rec.emuState(), rec.checkpoint(), rec.checkpointEnd(), control], "BAD_PADDING");
});

test("record fields: control id, emulator id and index, engine state engine and format", async () => {
  const colo = (...tail: Uint8Array[]): Uint8Array[] => [...start(), rec.allZero(), rec.emuState(), rec.checkpoint(), ...tail];
  await rejects(colo(rec.checkpointEnd(), rec.checkpointState(4)), "BAD_FIELD", { message: /control_id 4/ });
  await rejects(colo(rec.emulatorContext(0, 0)), "BAD_FIELD", { message: /emulator_id 0/ });
  await rejects(colo(rec.emulatorContext(2, 0)), "BAD_FIELD");
  await rejects(colo(rec.emulatorContext(1, 1)), "BAD_FIELD", { message: /index 1/ });
  await rejects([...start(), rec.allZero(), rec.emuState(2)], "BAD_FIELD", { message: /engine_id 2/ });
  await rejects([...start(), rec.allZero(), rec.emuState(1, 3)], "BAD_FIELD", { message: /format_version 3/ });
  // EMU_STATE in a stream for a kvm machine.
  const kvm = machineHeader("kvm", PAGES * PAGE_SIZE, 2);
  await rejects([...start(kvm), rec.allZero(), rec.emuState()], "BAD_FIELD", { message: /stream for engine kvm/ });
  const round = rawRecord(0x8000_0200, concatBytes(u32s(0, 2), u32s(1, 0)));
  await rejects([...start(), round], "BAD_RESERVED");
  const tooMany = rawRecord(0x8000_0200, concatBytes(u32s(0, 0), u32s(PAGES + 1, 0)));
  await rejects([...start(), tooMany], "BAD_FIELD");
});

test("every truncation of a stream is rejected as TRUNCATED", async () => {
  const bytes = await saveStream(Uint8Array.from({ length: 3 * PAGE_SIZE }, (_, i) => (i < PAGE_SIZE ? 0 : i & 0xff)), new Uint8Array([1, 2, 3]));
  for (let length = 0; length < bytes.length; length++) {
    const err = await rejects(bytes.subarray(0, length), "TRUNCATED");
    assert.ok(err.offset !== undefined && err.offset <= length, `offset ${String(err.offset)} for a cut at ${length}`);
  }
});

test("records out of order are rejected (image streams)", async () => {
  const h = encodeToolstackHeader();
  const cases: [string, Uint8Array[]][] = [
    ["END before any memory", [h, rec.end()]],
    ["CHECKPOINT_END without CHECKPOINT", [h, rec.checkpointEnd()]],
    ["NEW before the first checkpoint", [h, rec.checkpointState(0)]],
    ["EMULATOR_CONTEXT before any memory part", [h, rec.emulatorContext(1, 0)]],
    ["PAGE_DATA after the engine state", [...start(), rec.allZero(), rec.emuState(), rec.allZero()]],
    ["a second engine state", [...start(), rec.allZero(), rec.emuState(), rec.emuState()]],
    ["memory END without engine state", [...start(), rec.allZero(), rec.memoryEnd()]],
    ["CHECKPOINT without engine state", [...start(), rec.allZero(), rec.checkpoint()]],
    ["incomplete first image", [...start(), rec.pageData([pfnEntry(0, 0xe), pfnEntry(1, 0xe)]), rec.emuState(), rec.memoryEnd()]],
    ["MEMORY_STREAM after the memory END", [...save().slice(0, -1), rec.memoryStream()]],
    ["END while a checkpoint is open", [...start(), rec.allZero(), rec.emuState(), rec.checkpoint(), rec.end()]],
    ["MEMORY_STREAM while a checkpoint is open", [...start(), rec.allZero(), rec.emuState(), rec.checkpoint(), rec.memoryStream()]],
    ["MEMORY_STREAM without NEW", [...start(), rec.allZero(), rec.emuState(), rec.checkpoint(), rec.checkpointEnd(), rec.memoryStream()]],
    ["NEW not followed by MEMORY_STREAM", [...start(), rec.allZero(), rec.emuState(), rec.checkpoint(), rec.checkpointEnd(), rec.checkpointState(0), rec.end()]],
    ["NEW after the memory END", [...save().slice(0, -1), rec.checkpointState(0)]],
    ["two EMULATOR_CONTEXT for one emulator", [...start(), rec.allZero(), rec.emuState(), rec.checkpoint(), rec.emulatorContext(1, 0), rec.emulatorContext(1, 0)]],
    ["SVM_READY on an image stream", [...start(), rec.allZero(), rec.emuState(), rec.checkpoint(), rec.checkpointEnd(), rec.checkpointState(2)]],
    ["a dirty list on an image stream", [...start(), rec.dirty(1)]],
  ];
  for (const [name, parts] of cases) {
    await assert.doesNotReject(rejects(parts, "OUT_OF_ORDER"), name);
  }
});

test("records out of order are rejected (back channel)", async () => {
  const h = encodeToolstackHeader();
  const mem = [rec.memoryStream(), encodeMemoryHeaders(MACHINE)];
  const cases: [string, Uint8Array[]][] = [
    ["NEW on the back channel", [h, rec.checkpointState(0)]],
    ["PAGE_DATA on the back channel", [h, ...mem, rec.allZero()]],
    ["engine state on the back channel", [h, ...mem, rec.emuState()]],
    ["memory END on the back channel", [h, ...mem, rec.memoryEnd()]],
    ["CHECKPOINT_END on the back channel", [h, ...mem, rec.checkpoint(), rec.checkpointEnd()]],
    ["EMULATOR_CONTEXT on the back channel", [h, ...mem, rec.checkpoint(), rec.emulatorContext(1, 0)]],
  ];
  for (const [name, parts] of cases) {
    await assert.doesNotReject(rejects(parts, "OUT_OF_ORDER", { reader: { channel: "back-channel" } }), name);
  }
  await rejects([h, ...mem, rec.dirty(2, 1)], "BAD_PFN", { message: /strictly ascending/, reader: { channel: "back-channel" } });
  await rejects([h, ...mem, rec.dirty(1, 2), rec.dirty(2)], "BAD_PFN", { message: /after 2/, reader: { channel: "back-channel" } });
  await rejects([h, ...mem, rec.dirty(PAGES)], "BAD_PFN", { reader: { channel: "back-channel" } });
  await rejects([h, ...mem, rawRecord(0xf, pfnEntry(1, 0xe))], "BAD_RESERVED", { reader: { channel: "back-channel" } });
  await rejects([h, ...mem, rawRecord(0xf, new Uint8Array(12))], "BAD_LENGTH", { message: /multiple of 8/, reader: { channel: "back-channel" } });
  // A list ascends within one memory part only: the next part starts afresh.
  const ok = [h, ...mem, rec.dirty(3), rec.checkpoint(), rec.memoryStream(), rec.dirty(1), rec.checkpoint(), rec.end()];
  assert.equal((await readAll(concatBytes(...ok), { channel: "back-channel" })).at(-1)?.kind, "end");
});

test("bytes after END are rejected for files, left alone otherwise", async () => {
  const bytes = concatBytes(...save(), new Uint8Array(8));
  await rejects(bytes, "TRAILING_DATA", { message: /bytes follow the END/, reader: { requireEndOfSource: true } });
  assert.equal((await readAll(bytes)).at(-1)?.kind, "end");
});

test("a failing source, or one that yields strings, is an IO error; the reader stays failed", async () => {
  const good = concatBytes(...save());
  async function* failing(): AsyncGenerator<Uint8Array> {
    yield good.subarray(0, 40);
    throw new Error("connection reset by peer");
  }
  const reader = new StreamReader(failing());
  let error: unknown;
  try {
    while ((await reader.next()) !== undefined);
  } catch (err) {
    error = err;
  }
  assert.ok(error instanceof StreamError && error.code === "IO", String(error));
  assert.match(error.message, /connection reset by peer/);
  await assert.rejects(reader.next(), (err) => err === error);

  async function* strings(): AsyncGenerator<unknown> {
    yield "ColoTsFm";
  }
  await assert.rejects(readAll(strings() as AsyncIterable<Uint8Array>), (err) => err instanceof StreamError && err.code === "IO");
});

test("VM_CONFIG: right after the header (or optional records), decoded exactly; absent is valid too", async () => {
  const path = "/srv/colo/vms/\u00e9t\u00e9.cfg";
  const text = "\ufeff# \u{1f5a5} r\u00e9plica\r\nname = \"g\"\n";
  const records = await readAll(concatBytes(encodeToolstackHeader(), rec.vmConfig(utf8(path), utf8(text)), ...save().slice(1)), { requireEndOfSource: true });
  assert.deepEqual(records[0], { kind: "vm-config", offset: 16, config: { format: 1, path, text } });
  assert.equal(records[1]?.kind, "memory-stream");
  // Optional records may come first; the shortest (path "/", one octet of text) and longest bodies.
  const optional = rawRecord(0x8000_0042, new Uint8Array(3));
  const shortest = rec.vmConfig(utf8("/"), utf8("x"));
  assert.equal((await readAll(concatBytes(encodeToolstackHeader(), optional, shortest, ...save().slice(1)))).at(-1)?.kind, "end");
  const longest = rec.vmConfig(utf8("/".padEnd(4096, "p")), utf8("t".repeat(65536)));
  const [big] = await readAll(concatBytes(encodeToolstackHeader(), longest, ...save().slice(1)));
  assert.ok(big?.kind === "vm-config" && big.config.path.length === 4096 && big.config.text.length === 65536);
  // A stream without VM_CONFIG is valid (the grammar does not require it; colo restore does).
  assert.equal((await readAll(concatBytes(...save()))).at(-1)?.kind, "end");
});

test("VM_CONFIG fields: format, path and text lengths, UTF-8, NUL, relative path", async () => {
  const withConfig = (config: Uint8Array): Uint8Array[] => [encodeToolstackHeader(), config, ...save().slice(1)];
  const bad = async (config: Uint8Array, code: StreamErrorCode, message: RegExp): Promise<void> => {
    const err = await rejects(withConfig(config), code, { message });
    assert.equal(err.offset, 16);
    assert.equal(err.what, "toolstack record VM_CONFIG (0x00000200)");
  };
  await bad(rec.vmConfig(undefined, undefined, 0), "BAD_FIELD", /unknown format 0/);
  await bad(rec.vmConfig(undefined, undefined, 2), "BAD_FIELD", /unknown format 2/);
  // path_length: 0, over 4096, past the body, or leaving no text.
  await bad(rec.vmConfig(new Uint8Array(0), utf8("/vm.cfg x")), "BAD_FIELD", /path_length 0, allowed 1 to 4096/);
  await bad(rec.vmConfig(utf8("/".padEnd(4097, "p")), utf8("x")), "BAD_FIELD", /path_length 4097/);
  await bad(rec.vmConfig(utf8("/a"), utf8("x"), 1, 0xffff_ffff), "BAD_FIELD", /path_length 4294967295/);
  await bad(rec.vmConfig(utf8("/a"), utf8("x"), 1, 4), "BAD_LENGTH", /leaves no config text/);
  await bad(rec.vmConfig(utf8("/a"), utf8("x"), 1, 3), "BAD_LENGTH", /leaves no config text/);
  // Text: empty (the body is then 8 + path: at least 10 for the bounds), over 65536 octets.
  await bad(rec.vmConfig(utf8("/ab"), new Uint8Array(0)), "BAD_LENGTH", /leaves no config text/);
  await bad(rec.vmConfig(utf8("/"), utf8("t".repeat(65537))), "BAD_LENGTH", /config text of 65537 octets, allowed 1 to 65536/);
  // Invalid UTF-8: a lone continuation, an overlong "/", a surrogate, a cut sequence, 0xFF, beyond U+10FFFF.
  for (const octets of [[0x80], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0xff], [0xf4, 0x90, 0x80, 0x80]]) {
    await bad(rec.vmConfig(undefined, concatBytes(utf8("name = "), Uint8Array.from(octets))), "BAD_FIELD", /config text is not valid UTF-8/);
    await bad(rec.vmConfig(concatBytes(utf8("/vm"), Uint8Array.from(octets))), "BAD_FIELD", /path is not valid UTF-8/);
  }
  // A character cut between path and text.
  const e = utf8("/\u00e9"); // 2F C3 A9
  await bad(rec.vmConfig(e.subarray(0, 2), concatBytes(e.subarray(2), utf8("x"))), "BAD_FIELD", /path is not valid UTF-8/);
  // NUL octets.
  await bad(rec.vmConfig(utf8("/vm\0.cfg")), "BAD_FIELD", /path has a NUL octet at 3/);
  await bad(rec.vmConfig(undefined, utf8("name = 'g'\0")), "BAD_FIELD", /config text has a NUL octet at 10/);
  // A relative path.
  await bad(rec.vmConfig(utf8("vm/g.cfg")), "BAD_FIELD", /not absolute/);
  await bad(rec.vmConfig(utf8("./g.cfg")), "BAD_FIELD", /not absolute/);
  // Bounds of the body, checked before it is read, and padding.
  await rejects([encodeToolstackHeader(), u32s(0x200, 9)], "BAD_LENGTH", { message: /VM_CONFIG takes 10 to 69640/ });
  await rejects([encodeToolstackHeader(), u32s(0x200, 69641)], "BAD_LENGTH", { message: /VM_CONFIG takes 10 to 69640/ });
  const padded = rawRecord(0x200, concatBytes(u32s(1, 2), utf8("/ab")), { padding: new Uint8Array([0, 0, 0, 1, 0]) });
  await rejects([encodeToolstackHeader(), padded], "BAD_PADDING", { message: /VM_CONFIG/ });
  // Its optional shadow is not an optional record.
  await rejects([encodeToolstackHeader(), rawRecord(0x8000_0200, new Uint8Array(8))], "UNKNOWN_RECORD", { message: /shadows the mandatory VM_CONFIG/ });
  // The rest of the toolstack metadata range is reserved.
  await rejects([encodeToolstackHeader(), rawRecord(0x201, new Uint8Array(16))], "UNKNOWN_RECORD");
  await rejects([encodeToolstackHeader(), rawRecord(0x2ff, new Uint8Array(16))], "UNKNOWN_RECORD");
});

test("VM_CONFIG out of place: twice, after MEMORY_STREAM, on the back channel", async () => {
  const h = encodeToolstackHeader();
  const colo = [...start(), rec.allZero(), rec.emuState(), rec.checkpoint()];
  const cases: [string, Uint8Array[]][] = [
    ["a second VM_CONFIG", [h, rec.vmConfig(), rec.vmConfig()]],
    ["a second VM_CONFIG after an optional record", [h, rec.vmConfig(), rawRecord(0x8000_0042, EMPTY), rec.vmConfig()]],
    ["VM_CONFIG after the memory END", [...save().slice(0, -1), rec.vmConfig()]],
    ["VM_CONFIG in a checkpoint", [...colo, rec.vmConfig()]],
    ["VM_CONFIG after a checkpoint", [...colo, rec.checkpointEnd(), rec.vmConfig()]],
    ["VM_CONFIG after NEW", [...colo, rec.checkpointEnd(), rec.checkpointState(0), rec.vmConfig()]],
  ];
  for (const [name, parts] of cases) {
    await assert.doesNotReject(rejects(parts, "OUT_OF_ORDER", { message: /: a second VM_CONFIG|: VM_CONFIG after the first MEMORY_STREAM|: CHECKPOINT_STATE NEW must be followed/ }), name);
  }
  // Inside a memory part the memory layer reads it: its 0x200 is no type.
  await rejects([...start(), rec.vmConfig()], "UNKNOWN_RECORD", { message: /memory record unknown \(0x00000200\)/ });
  await rejects([h, rec.vmConfig(), rec.checkpointState(1)], "OUT_OF_ORDER", { message: /VM_CONFIG on the back channel/, reader: { channel: "back-channel" } });
  await rejects([h, rec.checkpointState(1), rec.vmConfig()], "OUT_OF_ORDER", { message: /VM_CONFIG on the back channel/, reader: { channel: "back-channel" } });
});

test("error messages name the record type and the stream offset", async () => {
  const err = await rejects(save([rec.pageData([pfnEntry(9, 0xe)])]), "BAD_PFN");
  assert.equal(err.offset, 64);
  assert.equal(err.what, "memory record PAGE_DATA (0x00000001)");
  assert.equal(err.message, "stream offset 64: memory record PAGE_DATA (0x00000001): pfn 9 is outside guest memory (4 pages)");
});
