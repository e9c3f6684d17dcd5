/**
 * Helpers for tests of the stream format (here and in the layers that build
 * on it): a seeded PRNG, sample RAM, real streams built with the writer,
 * hand-made records for malformed streams, and chunked sources.
 */
import assert from "node:assert/strict";
import { PAGE_SIZE } from "../engine/engine.js";
import { EMU_STATE_FORMAT, QEMU_STATE_FORMAT, type EngineState } from "./engine-state.js";
import { StreamError, type StreamErrorCode } from "./errors.js";
import { encodeRecordHeader, paddingFor } from "./framing.js";
import { machineHeader, type MachineHeader } from "./memory-header.js";
import { readAll, type ReaderOptions } from "./reader.js";
import { MemorySink } from "./sink.js";
import { allPfns, writePages } from "./write-pages.js";
import type { VmConfigInput } from "./vm-config-record.js";
import { StreamWriter } from "./writer.js";

/** mulberry32: a small seeded PRNG, so a failing case reproduces from its seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomInt(random: () => number, below: number): number {
  return Math.floor(random() * below);
}

export function randomBytes(random: () => number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = randomInt(random, 256);
  return out;
}

/**
 * RAM of `pages` pages: about `zeroFraction` of them all zero, the rest
 * random (some with only one non-zero octet, the hardest case for a zero test).
 */
export function sampleRam(random: () => number, pages: number, zeroFraction = 0.5): Uint8Array {
  const ram = new Uint8Array(pages * PAGE_SIZE);
  for (let pfn = 0; pfn < pages; pfn++) {
    const r = random();
    if (r < zeroFraction) continue;
    const at = pfn * PAGE_SIZE;
    if (r < zeroFraction + (1 - zeroFraction) / 4) {
      ram[at + randomInt(random, PAGE_SIZE)] = 1 + randomInt(random, 255);
    } else {
      ram.set(randomBytes(random, PAGE_SIZE), at);
    }
  }
  return ram;
}

export function emuMachine(pages: number): MachineHeader {
  return machineHeader("emu", pages * PAGE_SIZE, 1);
}

export function emuState(blob: Uint8Array): EngineState {
  return { engineId: "emu", formatVersion: EMU_STATE_FORMAT.V86_SAVE_STATE, blob };
}

export function qemuMachine(pages: number): MachineHeader {
  return machineHeader("qemu", pages * PAGE_SIZE, 1);
}

/** A QEMU_STATE (format 1); the blob is opaque to the stream. */
export function qemuState(blob: Uint8Array): EngineState {
  return { engineId: "qemu", formatVersion: QEMU_STATE_FORMAT.CQST_DEVICE_STATE, blob };
}

/**
 * A VM_CONFIG as `colo save` writes one: an absolute path and an xl.cfg text
 * with relative paths, CRLF and LF line ends, and non-ASCII characters.
 */
export const SAMPLE_VM_CONFIG: VmConfigInput = {
  path: "/srv/colo/vms/guest.cfg",
  text: [
    "# the lab guest \u2014 r\u00e9plica test \u{1f5a5}",
    'name = "guest"',
    "memory = 160                # MiB",
    'kernel = "../.cache/guest/vmlinuz"\r',
    'extra = "console=ttyS0 quiet"',
    "disk = [ 'format=raw, vdev=hda, access=rw, target=guest-data.img' ]",
    "vif = [ 'mac=00:16:3e:4c:00:10, bridge=colobr' ]",
    "",
  ].join("\n"),
};

/** A save-file stream: VM_CONFIG when `config` is given, every page of `ram`, the state, memory END, END. */
export async function saveStream(ram: Uint8Array, state: Uint8Array, config?: VmConfigInput): Promise<Uint8Array> {
  const machine = emuMachine(ram.length / PAGE_SIZE);
  const sink = new MemorySink();
  const writer = new StreamWriter(sink, { machine });
  if (config !== undefined) await writer.writeVmConfig(config);
  await writer.writeMemoryStream();
  await writePages(writer, ram, allPfns(machine.pageCount));
  await writer.writeEngineState(emuState(state));
  await writer.writeMemoryEnd();
  await writer.writeEnd();
  return sink.bytes();
}

/** A whole record, framed and padded, from raw parts (for malformed streams). */
export function rawRecord(type: number, body: Uint8Array, options: { bodyLength?: number; padding?: Uint8Array } = {}): Uint8Array {
  const header = encodeRecordHeader(type, options.bodyLength ?? body.length);
  return concatBytes(header, body, options.padding ?? paddingFor(body.length));
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Little-endian u32s, for hand-made record bodies and headers. */
export function u32s(...values: number[]): Uint8Array {
  const out = new Uint8Array(4 * values.length);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setUint32(4 * i, v >>> 0, true));
  return out;
}

/**
 * Reads `input` (the bytes, or parts to concatenate) with readAll and asserts
 * that it is rejected with a StreamError of `code` (and, when given, a message
 * matching `message`); returns the error for further checks.
 */
export async function rejects(input: Uint8Array | Uint8Array[], code: StreamErrorCode, opts: { message?: RegExp; reader?: ReaderOptions } = {}): Promise<StreamError> {
  const bytes = input instanceof Uint8Array ? input : concatBytes(...input);
  try {
    await readAll(bytes, opts.reader);
  } catch (err) {
    assert.ok(err instanceof StreamError, `expected a StreamError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (opts.message !== undefined) assert.match(err.message, opts.message);
    return err;
  }
  assert.fail(`expected ${code}, the stream was accepted`);
}

/** The bytes of `bytes` as chunks of random sizes (1 to maxChunk octets), as a socket delivers them. */
export function* randomChunks(bytes: Uint8Array, random: () => number, maxChunk = 65536): Generator<Uint8Array, void, undefined> {
  let at = 0;
  while (at < bytes.length) {
    const size = 1 + randomInt(random, maxChunk);
    yield bytes.subarray(at, at + size);
    at += size;
  }
}

/** An async source of the given chunks (each yielded after a microtask, like a stream). */
export async function* asyncChunks(chunks: Iterable<Uint8Array>): AsyncGenerator<Uint8Array, void, undefined> {
  for (const c of chunks) {
    await Promise.resolve();
    yield c;
  }
}

/** A minimal Ethernet frame (broadcast, EtherType 0x0800) carrying `n`, for NET_FRAME records. */
function sampleFrame(n: number): Uint8Array {
  const frame = new Uint8Array(60);
  frame.fill(0xff, 0, 6);
  frame.set([0x08, 0x00], 12);
  frame[14] = n & 0xff;
  return frame;
}

/**
 * A COLO forward stream as the primary writes one in compare mode with one
 * replicated disk (spec §6.2): VM_CONFIG, ENGINE_COMPAT, REPLICATION_MODE,
 * DISK_INFO, an initial-copy DISK_WRITE; checkpoint 0 (a pre-copy round of
 * every page, the state, CHECKPOINT, DISK_CHECKPOINT, CHECKPOINT_END); then
 * per later checkpoint a mirrored NET_FRAME, a DISK_WRITE, a HEARTBEAT,
 * NEW and a memory part of `dirtyPfns`, CHECKPOINT, DISK_CHECKPOINT,
 * CHECKPOINT_END; and END (an orderly stop).
 */
export async function coloForwardStream(ram: Uint8Array, checkpoints: number, dirtyPfns: readonly number[] = [0, 2]): Promise<Uint8Array> {
  const machine = emuMachine(ram.length / PAGE_SIZE);
  const sink = new MemorySink();
  const writer = new StreamWriter(sink, { machine });
  await writer.writeVmConfig(SAMPLE_VM_CONFIG);
  await writer.writeEngineCompat({ engineId: "emu", descriptor: "v86 0.5.462+g5f9a90f state 2" });
  await writer.writeReplicationMode({ mode: "compare", disks: true });
  await writer.writeDiskInfo({ disk: 0, chunkSize: 4096, size: 4096, chunkHashes: [new Uint8Array(32)] });
  await writer.writeDiskWrite({ disk: 0, seq: 0, offset: 0, data: new Uint8Array(4096) });
  await writer.writeMemoryStream();
  await writer.writePrecopyRound({ round: 0, final: true, pageCount: machine.pageCount });
  await writePages(writer, ram, allPfns(machine.pageCount));
  await writer.writeEngineState(emuState(new Uint8Array([1, 2, 3])));
  await writer.writeCheckpoint();
  await writer.writeDiskCheckpoint({ disk: 0, uptoSeq: 0 });
  await writer.writeCheckpointEnd();
  for (let n = 1; n <= checkpoints; n++) {
    await writer.writeNetFrame({ direction: "mirrored-input", frame: sampleFrame(n) });
    await writer.writeDiskWrite({ disk: 0, seq: n, offset: 512 * n, data: new Uint8Array(512).fill(n) });
    await writer.writeHeartbeat({ sequence: n - 1, senderTimeMs: 1000 * n });
    await writer.writeCheckpointState("NEW");
    await writer.writeMemoryStream();
    await writePages(writer, ram, dirtyPfns);
    await writer.writeEngineState(emuState(new Uint8Array([n])));
    await writer.writeCheckpoint();
    await writer.writeDiskCheckpoint({ disk: 0, uptoSeq: n });
    await writer.writeCheckpointEnd();
  }
  await writer.writeEnd();
  return sink.bytes();
}

/**
 * A secondary's back channel (spec §6.3): DISK_WANT, SVM_READY for
 * checkpoint 0, then per checkpoint an SVM frame, a HEARTBEAT,
 * SVM_SUSPENDED, a memory part with the SVM's dirty pages, SVM_READY,
 * SVM_RESUMED; a CHECKPOINT_REQUEST; END.
 */
export async function backChannelStream(pages: number, checkpoints: number): Promise<Uint8Array> {
  const sink = new MemorySink();
  const writer = new StreamWriter(sink, { machine: emuMachine(pages), channel: "back-channel" });
  await writer.writeDiskWant({ disk: 0, chunks: [0] });
  await writer.writeCheckpointState("SVM_READY");
  for (let n = 1; n <= checkpoints; n++) {
    await writer.writeNetFrame({ direction: "secondary-output", frame: sampleFrame(n) });
    await writer.writeHeartbeat({ sequence: n - 1, senderTimeMs: 1000 * n });
    await writer.writeCheckpointState("SVM_SUSPENDED");
    await writer.writeMemoryStream();
    await writer.writeDirtyPfnList(Uint32Array.from([0, pages - 1]));
    await writer.writeCheckpoint();
    await writer.writeCheckpointState("SVM_READY");
    await writer.writeCheckpointState("SVM_RESUMED");
  }
  await writer.writeCheckpointRequest({ reason: "disk-backlog", disk: 0 });
  await writer.writeEnd();
  return sink.bytes();
}
