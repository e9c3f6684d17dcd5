/**
 * `colo stream verify` through the real entry point (main.js in a child
 * process, as main.test.ts runs it), on streams the project's own writers
 * build: a save file written by saveToFile() (what `colo save` runs), a
 * live migration written by writeImage(), a COLO forward stream with
 * checkpoints and a back channel. Each corruption gets its exact one-line
 * error and exit code 1; a file that cannot be read, exit 2.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { saveToFile, writeImage } from "../api/image-io.js";
import { PAGE_SIZE } from "../engine/engine.js";
import { FakeEngine } from "../engine/testing/fake-engine.js";
import { machineHeader, MemorySink, readAll, StreamWriter } from "../state/index.js";
import { backChannelStream, coloForwardStream, concatBytes, SAMPLE_VM_CONFIG, sampleRam, seededRandom } from "../state/testing.js";

const MAIN = fileURLToPath(new URL("./main.js", import.meta.url));
/** Two PAGE_DATA records' worth of pages. */
const PAGES = 2048;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function colo(args: string[], input?: Uint8Array): Run {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: "utf8", timeout: 30_000, ...(input ? { input } : {}) });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

let dir = "";
let save: Uint8Array = new Uint8Array(0);
let forward: Uint8Array = new Uint8Array(0);

/** Each framed record of a valid stream: its index, kind, offset and end (machine headers excluded, as in the verifier's numbering). */
async function records(bytes: Uint8Array): Promise<{ index: number; kind: string; offset: number; end: number }[]> {
  const all = await readAll(bytes, { requireEndOfSource: true });
  const framed = all.map((r, i) => ({ kind: r.kind, offset: r.offset, end: all[i + 1]?.offset ?? bytes.length }));
  return framed.filter((r) => r.kind !== "machine-header").map((r, index) => ({ ...r, index }));
}

async function record(bytes: Uint8Array, kind: string, nth = 0): Promise<{ index: number; offset: number; end: number }> {
  const found = (await records(bytes)).filter((r) => r.kind === kind)[nth];
  assert.ok(found, `no ${kind} #${nth}`);
  return found;
}

function u32(bytes: Uint8Array, at: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset).getUint32(at, true);
}

function withU32(bytes: Uint8Array, at: number, value: number): Uint8Array {
  const out = Uint8Array.from(bytes);
  new DataView(out.buffer).setUint32(at, value >>> 0, true);
  return out;
}

function without(bytes: Uint8Array, r: { offset: number; end: number }): Uint8Array {
  return concatBytes(bytes.subarray(0, r.offset), bytes.subarray(r.end));
}

/** Write `bytes` to a file of the test folder and verify it. */
function verify(name: string, bytes: Uint8Array, ...flags: string[]): Run & { file: string } {
  const file = join(dir, name);
  writeFileSync(file, bytes);
  return { ...colo(["stream", "verify", file, ...flags]), file };
}

/** A bad stream: exit 1, nothing on stdout, exactly one line on stderr. */
function rejects(name: string, bytes: Uint8Array, line: string): void {
  const r = verify(name, bytes);
  assert.equal(r.stderr, `colo: ${r.file}: ${line}\n`);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, "");
}

function fakeEngine(): FakeEngine {
  const e = new FakeEngine({ memoryBytes: PAGES * PAGE_SIZE, kernel: new Uint8Array(0), cmdline: "", disks: [] });
  e.ram().set(sampleRam(seededRandom(7), PAGES, 0.9));
  return e;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "colo-stream-verify-"));
  const engine = fakeEngine();
  await engine.start({ paused: true });
  await saveToFile(engine, join(dir, "save.colo"), SAMPLE_VM_CONFIG);
  save = new Uint8Array(readFileSync(join(dir, "save.colo")));
  forward = await coloForwardStream(sampleRam(seededRandom(8), 16, 0.5), 2);
});

after(() => rmSync(dir, { recursive: true, force: true }));

test("a save file as colo save writes it: valid, a few human lines, exit 0", () => {
  const r = verify("save-ok.colo", save);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split("\n");
  assert.equal(lines[0], `${r.file}: valid colo stream, save image: ${save.length} bytes (${(save.length / 1024).toFixed(1)} KiB), 9 records`);
  assert.equal(lines[1], 'machine emu, 8 MiB (2048 pages), 1 vCPU; engine state EMU_STATE format 1 (24 bytes); ENGINE_COMPAT "fake emu 1"');
  assert.match(lines[2] ?? "", /^pages: 2048 in 2 PAGE_DATA records \(\d+ with contents, \d+ zero\), 1 memory part, 0 checkpoints, 1 pre-copy round, VM_CONFIG \/srv\/colo\/vms\/guest\.cfg$/);
  assert.equal(lines[3], "records: toolstack VM_CONFIG 1, ENGINE_COMPAT 1, MEMORY_STREAM 1, END 1; memory PRECOPY_ROUND 1, PAGE_DATA 2, EMU_STATE 1, END 1");
  assert.equal(lines.length, 4);
  assert.equal(r.stderr, "");
});

test("--json: the summary as JSON", () => {
  const r = verify("save-json.colo", save, "--json");
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as Record<string, unknown>;
  assert.equal(j.valid, true);
  assert.equal(j.kind, "save");
  assert.equal(j.bytes, save.length);
  assert.equal(j.records, 9);
  assert.deepEqual(j.machine, { engine: "emu", memoryBytes: PAGES * PAGE_SIZE, vcpuCount: 1, pageCount: PAGES });
  assert.deepEqual(j.engineCompat, { engine: "emu", descriptor: "fake emu 1" });
  assert.deepEqual((j.pages as { entries: number }).entries, PAGES);
});

test("a live migration stream is recognised by its pre-copy rounds; standard input works as -", async () => {
  const engine = fakeEngine();
  await engine.start();
  const sink = new MemorySink();
  const writer = new StreamWriter(sink, { machine: machineHeader("emu", engine.memoryBytes) });
  await writeImage(engine, writer, SAMPLE_VM_CONFIG, { live: true, finalRoundPages: 0, pause: () => engine.pause(), onProgress: (p) => p.round === 0 && engine.markDirty(5) });
  const r = colo(["stream", "verify", "--json", "-"], sink.bytes());
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { kind: string; precopyRounds: number; file: string; pages: { entries: number } };
  assert.equal(j.file, "stdin");
  assert.equal(j.kind, "migration");
  assert.equal(j.precopyRounds, 3, "round 0, the page dirtied during it, the final round");
  assert.equal(j.pages.entries, PAGES + 1);
});

test("a COLO forward stream with checkpoints, and a back channel with --back-channel", async () => {
  const r = verify("forward-ok.colo", forward, "--json");
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { kind: string; checkpoints: number; controls: unknown; replication: unknown };
  assert.equal(j.kind, "replication");
  assert.equal(j.checkpoints, 3);
  assert.deepEqual(j.controls, { NEW: 2 });
  assert.deepEqual(j.replication, { mode: "compare", disks: true });
  const b = verify("back-ok.colo", await backChannelStream(16, 2), "--back-channel");
  assert.equal(b.code, 0, b.stderr);
  assert.match(b.stdout, /^.*: valid colo stream, COLO back channel: \d+ bytes, 20 records\nmachine emu, 64 KiB \(16 pages\), 1 vCPU\n/);
});

test("bad magic", () => {
  const bad = Uint8Array.from(save);
  bad[0] = 0x58;
  rejects("magic.colo", bad, 'toolstack header at offset 0: ident is "XoloTsFm", expected "ColoTsFm": not a colo stream [BAD_MAGIC, spec §3.1]');
});

test("unknown record type", async () => {
  const r = await record(save, "engine-compat");
  rejects("type.colo", withU32(save, r.offset, 0x300), `record 1 (toolstack unknown 0x00000300) at offset ${r.offset}: unknown mandatory record type 0x00000300 [UNKNOWN_RECORD, spec §2, §3.2]`);
});

test("a length past the 64 MiB limit, and past the type's own bound", async () => {
  const p = await record(save, "page-data");
  rejects(
    "limit.colo",
    withU32(save, p.offset + 4, 0x4000_0000),
    `record 4 (memory PAGE_DATA 0x00000001) at offset ${p.offset}: body_length 1073741824 exceeds the limit of 67108864 for any record [BAD_LENGTH, spec §2]`,
  );
  const c = await record(save, "engine-compat");
  rejects("bound.colo", withU32(save, c.offset + 4, 512), `record 1 (toolstack ENGINE_COMPAT 0x80000201) at offset ${c.offset}: body_length 512, ENGINE_COMPAT takes 9 to 264 [BAD_LENGTH, spec §3.14]`);
});

test("truncated in a record header and in a record body", async () => {
  const p = await record(save, "page-data", 1);
  rejects(
    "cut-header.colo",
    save.subarray(0, p.offset + 4),
    `truncated at offset ${p.offset + 4} inside the header of record 5 (from offset ${p.offset}): the stream ended after 4 of 8 octets [TRUNCATED, spec §6.1, §7]`,
  );
  const length = u32(save, p.offset + 4);
  rejects(
    "cut-body.colo",
    save.subarray(0, p.offset + 100),
    `truncated at offset ${p.offset + 100} inside record 5 (memory PAGE_DATA 0x00000001, from offset ${p.offset}): the stream ended after 92 of ${length} octets [TRUNCATED, spec §6.1, §7]`,
  );
});

test("out of order: END before the engine state; a second VM_CONFIG; a NET_FRAME inside an open checkpoint", async () => {
  const state = await record(save, "engine-state");
  rejects("no-state.colo", without(save, state), `record ${state.index} (memory END 0x00000000) at offset ${state.offset}: END before the engine state [OUT_OF_ORDER, spec §6.1]`);
  const config = await record(save, "vm-config");
  const twice = concatBytes(save.subarray(0, config.end), save.subarray(config.offset));
  rejects("two-configs.colo", twice, `record 1 (toolstack VM_CONFIG 0x00000200) at offset ${config.end}: a second VM_CONFIG [OUT_OF_ORDER, spec §6.1]`);
  const end0 = await record(forward, "checkpoint-end");
  rejects(
    "open-checkpoint.colo",
    without(forward, end0),
    `record ${end0.index} (toolstack NET_FRAME 0x00000102) at offset ${end0.offset}: NET_FRAME while a checkpoint awaits its CHECKPOINT_END [OUT_OF_ORDER, spec §6.1]`,
  );
});

test("page count mismatch: a PAGE_DATA count that disagrees with its length; a first image missing pages", async () => {
  const p = await record(save, "page-data");
  const count = u32(save, p.offset + 8);
  let normal = 0;
  for (let i = 0; i < count - 1; i++) if (u32(save, p.offset + 16 + 8 * i + 4) >>> 28 === 0) normal++;
  const length = u32(save, p.offset + 4);
  rejects(
    "count.colo",
    withU32(save, p.offset + 8, count - 1),
    `record 4 (memory PAGE_DATA 0x00000001) at offset ${p.offset}: body_length ${length}, but ${count - 1} pfns with ${normal} data pages need ${8 + 8 * (count - 1) + PAGE_SIZE * normal} [BAD_LENGTH, spec §4.4]`,
  );
  const second = await record(save, "page-data", 1);
  const end = await record(save, "memory-end");
  rejects(
    "missing-pages.colo",
    without(save, second),
    `record ${end.index - 1} (memory END 0x00000000) at offset ${end.offset - (second.end - second.offset)}: the first memory part sent 1024 of 2048 pages (pfn 1024 missing): not a complete image [OUT_OF_ORDER, spec §6.1]`,
  );
});

test("missing END, in a save file and in a replication capture; bytes after END", async () => {
  const end = await record(save, "end");
  rejects("no-end.colo", save.subarray(0, end.offset), `truncated at offset ${end.offset} before record ${end.index}: the stream ended before its END record [TRUNCATED, spec §6.1, §7]`);
  const fend = await record(forward, "end");
  rejects("forward-no-end.colo", forward.subarray(0, fend.offset), `truncated at offset ${fend.offset} before record ${fend.index}: the stream ended before its END record [TRUNCATED, spec §6.1, §7]`);
  rejects("trailing.colo", concatBytes(save, new Uint8Array(8)), `record ${end.index} (toolstack END 0x00000000) at offset ${end.offset}: bytes follow the END record [TRAILING_DATA, spec §6.1, §7]`);
});

test("--json on a bad stream: the error as JSON on stdout, the one line on stderr", async () => {
  const p = await record(save, "page-data");
  const r = verify("json-bad.colo", save.subarray(0, p.offset + 100), "--json");
  assert.equal(r.code, 1);
  assert.equal(r.stderr.split("\n").length, 2, r.stderr);
  const j = JSON.parse(r.stdout) as { valid: boolean; error: Record<string, unknown> };
  assert.equal(j.valid, false);
  assert.equal(j.error.code, "TRUNCATED");
  assert.equal(j.error.record, 4);
  assert.equal(j.error.name, "PAGE_DATA");
  assert.equal(j.error.offset, p.offset);
  assert.equal(j.error.endedAt, p.offset + 100);
  assert.equal(j.error.section, "§6.1, §7");
});

test("a file that cannot be opened or read: exit 2, one line", () => {
  const missing = join(dir, "nope.colo");
  const r = colo(["stream", "verify", missing]);
  assert.equal(r.code, 2);
  assert.equal(r.stderr, `colo: ${missing}: cannot open: ENOENT: no such file or directory, open '${missing}'\n`);
  const d = colo(["stream", "verify", dir]);
  assert.equal(d.code, 2);
  assert.match(d.stderr, /^colo: .*: cannot read: .*EISDIR.*\n$/);
});
