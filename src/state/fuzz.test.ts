/**
 * Property tests: real streams, randomly truncated and corrupted, must be
 * rejected with a StreamError (never another exception, never a hang), or —
 * where the corruption lands in bytes the format cannot check (page
 * contents, state blobs, config text) — parse to valid records. Seeded: a
 * failure prints its seed; rerun with COLO_FUZZ_SEED=<seed> to reproduce a
 * whole run.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { PAGE_SIZE } from "../engine/engine.js";
import { EMULATOR_ID } from "./emulator-context.js";
import { StreamError } from "./errors.js";
import { readAll, type ReaderOptions } from "./reader.js";
import { MAX_VM_CONFIG_PATH, MAX_VM_CONFIG_TEXT, VM_CONFIG_SUBHEADER_SIZE } from "./record-types.js";
import type { StreamRecord } from "./records.js";
import { MemorySink } from "./sink.js";
import {
  asyncChunks,
  emuMachine,
  emuState,
  qemuMachine,
  qemuState,
  randomBytes,
  randomChunks,
  randomInt,
  SAMPLE_VM_CONFIG,
  sampleRam,
  saveStream,
  seededRandom,
} from "./testing.js";
import { allPfns, writePages } from "./write-pages.js";
import { StreamWriter } from "./writer.js";

const BASE_SEED = Number(process.env["COLO_FUZZ_SEED"] ?? 0x5eed);
const MUTATIONS = 1000;
const TIME_BOUND_MS = 10_000;

interface Sample {
  name: string;
  bytes: Uint8Array;
  options: ReaderOptions;
  /** Bit b of tolerated[i] set: a flip of bit b of octet i may go undetected (opaque contents). */
  tolerated: Uint8Array;
}

function shuffle(random: () => number, values: number[]): number[] {
  for (let i = values.length - 1; i > 0; i--) {
    const j = randomInt(random, i + 1);
    [values[i], values[j]] = [values[j] ?? 0, values[i] ?? 0];
  }
  return values;
}

/**
 * Which bits of a VM_CONFIG body (record at `at`) a flip may change unnoticed. The format
 * and the path's leading "/" are checked. In the path and the text, flipping bit 7 of an
 * ASCII octet always breaks the UTF-8 (a lone continuation or a lead octet without its
 * continuation), and the other bits of ASCII and any bit of the other octets may give
 * another valid text. A flip of path_length moves the split between path and text: it
 * goes unnoticed when the new split is in bounds and falls between two characters.
 */
function markVmConfig(tolerated: Uint8Array, bytes: Uint8Array, at: number, pathLength: number, bodyLength: number): void {
  const path = at + 8 + VM_CONFIG_SUBHEADER_SIZE;
  const room = bodyLength - VM_CONFIG_SUBHEADER_SIZE;
  for (let i = path; i < path + room; i++) {
    if (i === path) continue; // the leading "/"
    tolerated[i] = (bytes[i] ?? 0) < 0x80 ? 0x7f : 0xff;
  }
  for (let bit = 0; bit < 32; bit++) {
    const moved = (pathLength ^ (2 ** bit)) >>> 0;
    const inBounds = moved >= 1 && moved <= MAX_VM_CONFIG_PATH && moved < room && room - moved <= MAX_VM_CONFIG_TEXT;
    if (inBounds && ((bytes[path + moved] ?? 0) & 0xc0) !== 0x80) {
      const octet = at + 8 + 4 + (bit >>> 3);
      tolerated[octet] = (tolerated[octet] ?? 0) | (1 << (bit & 7));
    }
  }
}

/**
 * Which bits of the HEARTBEAT records of a stream a flip may change unnoticed: bits 0-52 of
 * sender_time_ms (informational; 2^53 and above is rejected), and a bit of a sequence that
 * leaves it above the previous heartbeat's and below the next one's.
 */
function markHeartbeats(tolerated: Uint8Array, records: StreamRecord[]): void {
  const beats = records.flatMap((r) => (r.kind === "heartbeat" ? [r] : []));
  beats.forEach((r, i) => {
    const previous = beats[i - 1]?.heartbeat.sequence ?? -1;
    const next = beats[i + 1]?.heartbeat.sequence ?? Number.MAX_SAFE_INTEGER + 1;
    const sequence = BigInt(r.heartbeat.sequence);
    for (let bit = 0; bit < 64; bit++) {
      const moved = Number(sequence ^ (1n << BigInt(bit)));
      const octet = r.offset + 8 + (bit >>> 3);
      if (moved > previous && moved < next) tolerated[octet] = (tolerated[octet] ?? 0) | (1 << (bit & 7));
    }
    tolerated.fill(0xff, r.offset + 16, r.offset + 22);
    tolerated[r.offset + 22] = 0x1f;
  });
}

/** Mark the bits a flip may leave undetected, from the clean stream and its records. */
function toleratedRegions(bytes: Uint8Array, records: StreamRecord[]): Uint8Array {
  const tolerated = new Uint8Array(bytes.length);
  const mark = (from: number, count: number): void => {
    tolerated.fill(0xff, from, from + count);
  };
  // How often each pfn is sent in the first part (pre-copy rounds send some again).
  const firstPartSends = new Map<number, number>();
  let part = -1;
  for (const r of records) {
    if (r.kind === "memory-stream") part++;
    if (r.kind === "page-data" && part === 0) for (const pfn of r.pages.pfns) firstPartSends.set(pfn, (firstPartSends.get(pfn) ?? 0) + 1);
  }
  // A pfn sent only once in the complete first image is checked by coverage; any other may
  // turn into another valid pfn.
  const checked = (pfn: number, inFirstPart: boolean): boolean => inFirstPart && firstPartSends.get(pfn) === 1;
  part = -1;
  for (const r of records) {
    switch (r.kind) {
      case "memory-stream":
        part++;
        break;
      case "page-data": {
        const count = r.pages.pfns.length;
        mark(r.offset + 16 + 8 * count, r.pages.data.length);
        r.pages.pfns.forEach((pfn, i) => {
          if (!checked(pfn, part === 0)) mark(r.offset + 16 + 8 * i, 4);
        });
        break;
      }
      case "engine-state":
        mark(r.offset + 16, r.state.blob.length);
        break;
      case "emulator-context":
        mark(r.offset + 16, r.context.context.length);
        break;
      case "precopy-round":
        mark(r.offset, 24); // optional: any field, even its type, may change unnoticed
        break;
      case "engine-compat": {
        // Optional: its type may become another unknown optional type (skipped). A descriptor octet may
        // become another printable one (the receiver's comparison refuses it, not the reader); bit 7 never.
        mark(r.offset, 4);
        const at = r.offset + 16;
        for (let i = 0; i < r.compat.descriptor.length; i++) tolerated[at + i] = 0x7f;
        break;
      }
      case "vm-config": {
        const octets = new TextEncoder().encode(r.config.path).length;
        markVmConfig(tolerated, bytes, r.offset, octets, VM_CONFIG_SUBHEADER_SIZE + octets + new TextEncoder().encode(r.config.text).length);
        break;
      }
      default:
        break;
    }
  }
  markHeartbeats(tolerated, records);
  return tolerated;
}

async function sample(name: string, bytes: Uint8Array, options: ReaderOptions): Promise<Sample> {
  const records = await readAll(bytes, options);
  return { name, bytes, options, tolerated: toleratedRegions(bytes, records) };
}

/** A save file as colo writes one: VM_CONFIG, ENGINE_COMPAT, pages in random order and batches, zero and random, a state blob. */
async function saveSample(random: () => number): Promise<Sample> {
  const pages = 160;
  const machine = emuMachine(pages);
  const ram = sampleRam(random, pages, 0.5);
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine });
  await w.writeVmConfig(SAMPLE_VM_CONFIG);
  await w.writeEngineCompat({ engineId: "emu", descriptor: "v86 0.5.462+g5f9a90f state 2" });
  await w.writeMemoryStream();
  const order = shuffle(random, [...allPfns(pages)]);
  for (let at = 0; at < order.length; ) {
    const n = 1 + randomInt(random, 60);
    await writePages(w, ram, order.slice(at, at + n));
    at += n;
  }
  await w.writeEngineState(emuState(randomBytes(random, 20_000)));
  await w.writeMemoryEnd();
  await w.writeEnd();
  return sample("save", sink.bytes(), { expect: { engineId: "emu", memoryBytes: machine.memoryBytes }, requireEndOfSource: true });
}

/** A qemu engine's save file: VM_CONFIG, ENGINE_COMPAT, every page, QEMU_STATE. */
async function qemuSaveSample(random: () => number): Promise<Sample> {
  const pages = 64;
  const machine = qemuMachine(pages);
  const ram = sampleRam(random, pages, 0.5);
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine });
  await w.writeVmConfig({ path: "/c", text: 'engine="qemu"' });
  await w.writeEngineCompat({ engineId: "qemu", descriptor: "qemu 7.2.22 pc" });
  await w.writeMemoryStream();
  await writePages(w, ram, allPfns(pages));
  await w.writeEngineState(qemuState(randomBytes(random, 5000)));
  await w.writeMemoryEnd();
  await w.writeEnd();
  return sample("qemu save", sink.bytes(), { expect: { engineId: "qemu", memoryBytes: machine.memoryBytes }, requireEndOfSource: true });
}

/** A COLO forward stream: VM_CONFIG (a short one), pre-copy rounds, initial checkpoint, two checkpoints, heartbeats between them. */
async function coloSample(random: () => number): Promise<Sample> {
  const pages = 96;
  const machine = emuMachine(pages);
  const ram = sampleRam(random, pages, 0.5);
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine });
  await w.writeVmConfig({ path: "/c", text: 'name="g"' });
  await w.writeEngineCompat({ engineId: "emu", descriptor: "v86 0.5.462 state 2" });
  await w.writeMemoryStream();
  await w.writePrecopyRound({ round: 0, final: false, pageCount: pages });
  await writePages(w, ram, allPfns(pages));
  await w.writePrecopyRound({ round: 1, final: true, pageCount: 3 });
  await writePages(w, ram, [5, 6, 90]);
  await w.writeEngineState(emuState(randomBytes(random, 3000)));
  await w.writeCheckpoint();
  await w.writeEmulatorContext({ emulatorId: EMULATOR_ID.COLO_VMM, index: 0, context: randomBytes(random, 77) });
  await w.writeCheckpointEnd();
  let beat = 0;
  await w.writeHeartbeat({ sequence: beat++, senderTimeMs: 1_700_000_000_000 });
  for (let c = 0; c < 2; c++) {
    const dirty = shuffle(random, [...allPfns(pages)]).slice(0, 10).sort((a, b) => a - b);
    for (const pfn of dirty) ram.set(randomBytes(random, PAGE_SIZE), pfn * PAGE_SIZE);
    await w.writeCheckpointState("NEW");
    await w.writeMemoryStream();
    await writePages(w, ram, dirty);
    await w.writeEngineState(emuState(randomBytes(random, 3000)));
    await w.writeCheckpoint();
    await w.writeCheckpointEnd();
    await w.writeHeartbeat({ sequence: beat++, senderTimeMs: 1_700_000_000_000 + 1000 * beat });
    await w.writeHeartbeat({ sequence: beat++, senderTimeMs: 1_700_000_000_000 + 1000 * beat });
  }
  await w.writeEnd();
  return sample("colo", sink.bytes(), { expect: { engineId: "emu", memoryBytes: machine.memoryBytes }, requireEndOfSource: true });
}

/** A back channel: heartbeats, dirty lists across several records and checkpoints. */
async function backChannelSample(random: () => number): Promise<Sample> {
  const machine = emuMachine(200);
  const sink = new MemorySink();
  const w = new StreamWriter(sink, { machine, channel: "back-channel" });
  await w.writeHeartbeat({ sequence: 0, senderTimeMs: 42 });
  for (let c = 0; c < 3; c++) {
    await w.writeHeartbeat({ sequence: 1 + 2 * c, senderTimeMs: 1042 + 2000 * c });
    await w.writeCheckpointState("SVM_SUSPENDED");
    await w.writeMemoryStream();
    const dirty = shuffle(random, [...allPfns(200)]).slice(0, 30).sort((a, b) => a - b);
    await w.writeDirtyPfnList(Uint32Array.from(dirty.slice(0, 12)));
    await w.writeDirtyPfnList(Uint32Array.from(dirty.slice(12)));
    await w.writeCheckpoint();
    await w.writeCheckpointState("SVM_READY");
    await w.writeHeartbeat({ sequence: 2 + 2 * c, senderTimeMs: 2042 + 2000 * c });
    await w.writeCheckpointState("SVM_RESUMED");
  }
  await w.writeEnd();
  const bytes = sink.bytes();
  // A dirty pfn may turn into another pfn that keeps the list ascending, and one SVM_* control id
  // into another (their order is the COLO protocol's to check): tolerate those octets.
  const s = await sample("back-channel", bytes, { channel: "back-channel", expect: { memoryBytes: machine.memoryBytes }, requireEndOfSource: true });
  for (const r of await readAll(bytes, s.options)) {
    if (r.kind === "checkpoint-state") s.tolerated[r.offset + 8] = 0xff;
    if (r.kind === "dirty-pfn-list") for (let i = 0; i < r.pfns.length; i++) s.tolerated.fill(0xff, r.offset + 8 + 8 * i, r.offset + 8 + 8 * i + 4);
    // engine_id 1 (emu) and 3 (qemu) differ in bit 1: a back channel has no engine state to check it against.
    if (r.kind === "machine-header") s.tolerated[r.offset + 24] = 0x02;
  }
  return s;
}

type Outcome = { ok: true } | { ok: false; error: StreamError };

async function parse(bytes: Uint8Array, options: ReaderOptions, random: () => number): Promise<Outcome> {
  try {
    // Chunk boundaries land anywhere, as from a socket.
    const source = random() < 0.5 ? bytes : asyncChunks(randomChunks(bytes, random, 1 + randomInt(random, 50_000)));
    await readAll(source, options);
    return { ok: true };
  } catch (err) {
    if (!(err instanceof StreamError)) throw new Error(`not a StreamError: ${String(err)}`, { cause: err });
    if (err.code === "INTERNAL") throw new Error(`INTERNAL: ${err.message}`, { cause: err });
    return { ok: false, error: err };
  }
}

function flipBit(bytes: Uint8Array, random: () => number): { mutated: Uint8Array; at: number; bit: number } {
  const mutated = bytes.slice();
  const at = randomInt(random, bytes.length);
  const bit = randomInt(random, 8);
  mutated[at] = (mutated[at] ?? 0) ^ (1 << bit);
  return { mutated, at, bit };
}

async function fuzz(build: (random: () => number) => Promise<Sample>, seed: number): Promise<{ truncations: number; flips: number; undetected: number }> {
  const s = await build(seededRandom(seed));
  const counts = { truncations: 0, flips: 0, undetected: 0 };
  for (let i = 0; i < MUTATIONS; i++) {
    const mutationSeed = seed * 100_003 + i;
    const random = seededRandom(mutationSeed);
    const kind = randomInt(random, 4);
    let description = "";
    try {
      if (kind === 0) {
        const length = randomInt(random, s.bytes.length);
        description = `truncated to ${length} of ${s.bytes.length} octets`;
        const outcome = await parse(s.bytes.subarray(0, length), s.options, random);
        assert.ok(!outcome.ok, "a truncated stream was accepted");
        assert.equal(outcome.error.code, "TRUNCATED", outcome.error.message);
        counts.truncations++;
      } else if (kind === 1 || kind === 2) {
        const { mutated, at, bit } = flipBit(s.bytes, random);
        description = `bit ${bit} of octet ${at} flipped`;
        const outcome = await parse(mutated, s.options, random);
        if (outcome.ok) {
          assert.ok((((s.tolerated[at] ?? 0) >> bit) & 1) === 1, "a flip outside page contents, blobs and config text went undetected");
          counts.undetected++;
        }
        counts.flips++;
      } else {
        // Several flips and overwritten spans: any outcome but a crash or a hang.
        const mutated = s.bytes.slice();
        const n = 1 + randomInt(random, 8);
        for (let k = 0; k < n; k++) {
          const at = randomInt(random, mutated.length);
          if (random() < 0.5) mutated[at] = (mutated[at] ?? 0) ^ (1 << randomInt(random, 8));
          else mutated.set(randomBytes(random, Math.min(1 + randomInt(random, 32), mutated.length - at)), at);
        }
        description = `${n} random corruptions`;
        await parse(mutated, s.options, random);
      }
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      throw new Error(`${s.name} stream (COLO_FUZZ_SEED=${seed}), mutation ${i} (seed ${mutationSeed}): ${description}: ${message}`, { cause: err });
    }
  }
  return counts;
}

for (const [name, build, offset] of [
  ["save file", saveSample, 0],
  ["COLO forward stream", coloSample, 1],
  ["back channel", backChannelSample, 2],
  ["qemu save file", qemuSaveSample, 5],
] as const) {
  test(`fuzz ${name}: ${MUTATIONS} truncations and corruptions are rejected or harmless, in bounded time`, async () => {
    const started = performance.now();
    const counts = await fuzz(build, BASE_SEED + offset);
    const elapsed = performance.now() - started;
    assert.ok(counts.truncations > 100 && counts.flips > 300, JSON.stringify(counts));
    assert.ok(elapsed < TIME_BOUND_MS, `${MUTATIONS} mutations took ${elapsed.toFixed(0)} ms`);
  });
}

test("every single-bit flip and every cut of a VM_CONFIG record is rejected, or only changes its path or text", async () => {
  // A small save file, so that every bit of the record can be tried.
  const s = await sample("save with VM_CONFIG", await saveStream(new Uint8Array(4 * PAGE_SIZE), new Uint8Array([1, 2, 3]), SAMPLE_VM_CONFIG), {
    expect: { engineId: "emu", memoryBytes: 4 * PAGE_SIZE },
    requireEndOfSource: true,
  });
  const [config] = (await readAll(s.bytes, s.options)).filter((r) => r.kind === "vm-config");
  assert.ok(config !== undefined && config.offset === 16);
  const length = new DataView(s.bytes.buffer, s.bytes.byteOffset).getUint32(config.offset + 4, true);
  const end = config.offset + 8 + length + ((8 - (length % 8)) % 8);
  const random = seededRandom(BASE_SEED + 4);
  const counts = { flips: 0, undetected: 0, splits: 0 };
  for (let at = config.offset; at < end; at++) {
    for (let bit = 0; bit < 8; bit++) {
      const mutated = s.bytes.slice();
      mutated[at] = (mutated[at] ?? 0) ^ (1 << bit);
      const outcome = await parse(mutated, s.options, random);
      counts.flips++;
      if (outcome.ok) {
        assert.ok((((s.tolerated[at] ?? 0) >> bit) & 1) === 1, `bit ${bit} of octet ${at} flipped: accepted`);
        counts.undetected++;
        if (at >= config.offset + 12 && at < config.offset + 16) counts.splits++;
      }
    }
    const cut = await parse(s.bytes.subarray(0, at), s.options, random);
    assert.ok(!cut.ok && cut.error.code === "TRUNCATED", `cut at ${at}`);
  }
  // Flips in the text and path do go through (there is no checksum), and so do some of path_length.
  assert.ok(counts.undetected > counts.flips / 2 && counts.splits > 0, JSON.stringify(counts));
});

test("every single-bit flip of ENGINE_COMPAT and of QEMU_STATE's sub-header is rejected, or only changes its type or descriptor", async () => {
  const s = await qemuSaveSample(seededRandom(BASE_SEED + 6));
  const records = await readAll(s.bytes, s.options);
  const compat = records.find((r) => r.kind === "engine-compat");
  const state = records.find((r) => r.kind === "engine-state");
  assert.ok(compat !== undefined && state !== undefined);
  const view = new DataView(s.bytes.buffer, s.bytes.byteOffset);
  const compatEnd = compat.offset + 8 + view.getUint32(compat.offset + 4, true) + 2; // 14 octets of descriptor, 2 of padding
  const random = seededRandom(BASE_SEED + 7);
  const counts = { flips: 0, undetected: 0 };
  // The whole ENGINE_COMPAT record with its padding, and QEMU_STATE's record header and sub-header.
  const spans: [number, number][] = [
    [compat.offset, compatEnd],
    [state.offset, state.offset + 16],
  ];
  for (const [from, to] of spans) {
    for (let at = from; at < to; at++) {
      for (let bit = 0; bit < 8; bit++) {
        const mutated = s.bytes.slice();
        mutated[at] = (mutated[at] ?? 0) ^ (1 << bit);
        const outcome = await parse(mutated, s.options, random);
        counts.flips++;
        if (outcome.ok) {
          assert.ok((((s.tolerated[at] ?? 0) >> bit) & 1) === 1, `bit ${bit} of octet ${at} flipped: accepted`);
          counts.undetected++;
        }
      }
    }
  }
  // Some type and descriptor flips go through (optional record, no checksum); QEMU_STATE's do not.
  assert.ok(counts.undetected > 0 && counts.undetected < counts.flips / 2, JSON.stringify(counts));
});

test("random octets after a valid toolstack header are rejected, never crash", async () => {
  const random = seededRandom(BASE_SEED + 3);
  const header = new Uint8Array([0x43, 0x6f, 0x6c, 0x6f, 0x54, 0x73, 0x46, 0x6d, 1, 0, 0, 0, 0, 0, 0, 0]);
  for (let i = 0; i < 500; i++) {
    const garbage = randomBytes(random, randomInt(random, 4096));
    const bytes = new Uint8Array(header.length + garbage.length);
    bytes.set(header);
    bytes.set(garbage, header.length);
    const outcome = await parse(bytes, {}, random);
    assert.ok(!outcome.ok, `garbage accepted (seed ${BASE_SEED + 3}, case ${i})`);
  }
});
