/**
 * Save files and migration streams carry the source engine's compatibility
 * (ENGINE_COMPAT) right after VM_CONFIG, and the receiving side refuses an
 * engine that cannot load the source's state there, before any page:
 * writeImage() and readConfig() + readMachine() as `colo save`/`restore`
 * and `colo migrate`/`migrate-receive` use them, over fake engines; no VM.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { PAGE_SIZE, type EngineId } from "../engine/engine.js";
import { FakeEngine } from "../engine/testing/fake-engine.js";
import { machineHeader, MemorySink, readAll, StreamError, StreamReader, StreamWriter } from "../state/index.js";
import { SAMPLE_VM_CONFIG } from "../state/testing.js";
import { readConfig, readMachine, writeImage } from "./image-io.js";

const PAGES = 8;

async function started(id: EngineId, compatibility: string | undefined): Promise<FakeEngine> {
  const e = new FakeEngine({ memoryBytes: PAGES * PAGE_SIZE, kernel: new Uint8Array(0), cmdline: "", disks: [] }, id);
  e.compatibility = compatibility;
  await e.start({ paused: true });
  return e;
}

async function imageOf(source: FakeEngine): Promise<Uint8Array> {
  const sink = new MemorySink();
  const writer = new StreamWriter(sink, { machine: machineHeader(source.id, source.memoryBytes) });
  await writeImage(source, writer, SAMPLE_VM_CONFIG, { live: false, pause: async () => {} });
  return sink.bytes();
}

/** What the destination does: VM_CONFIG first (to build its VM), then the machine into its started, paused engine. */
async function restoreInto(bytes: Uint8Array, engine: FakeEngine): Promise<void> {
  const reader = new StreamReader(bytes, { requireEndOfSource: true });
  const { config } = await readConfig(reader, "test image");
  assert.equal(config.name, "guest");
  await readMachine(engine, reader);
}

test("writeImage: VM_CONFIG, then ENGINE_COMPAT with the engine's own descriptor, then the machine", async () => {
  const source = await started("qemu", "qemu 7.2.22 pc");
  source.ram()[3 * PAGE_SIZE] = 0x42;
  const records = await readAll(await imageOf(source), { requireEndOfSource: true });
  assert.deepEqual(
    records.slice(0, 4).map((r) => r.kind),
    ["vm-config", "engine-compat", "memory-stream", "machine-header"],
  );
  const compat = records[1];
  assert.ok(compat?.kind === "engine-compat");
  assert.deepEqual(compat.compat, { engineId: "qemu", descriptor: "qemu 7.2.22 pc" });
  const state = records.find((r) => r.kind === "engine-state");
  assert.equal(state?.kind === "engine-state" ? state.state.engineId : undefined, "qemu", "a qemu machine's state goes as QEMU_STATE");
});

test("an engine that does not know its compatibility yet (a qemu not started) cannot write an image", async () => {
  const source = await started("qemu", undefined);
  await assert.rejects(imageOf(source), /does not know its compatibility yet/);
});

test("the destination refuses a source of another QEMU at ENGINE_COMPAT, in one line naming both, with no page applied", async () => {
  const source = await started("qemu", "qemu 7.2.22 pc");
  source.ram()[3 * PAGE_SIZE] = 0x42;
  const bytes = await imageOf(source);
  const dst = await started("qemu", "qemu 8.0.0 pc");
  await assert.rejects(restoreInto(bytes, dst), (err: unknown) => {
    assert.ok(err instanceof StreamError);
    assert.equal(err.code, "MISMATCH");
    assert.equal(err.what, "toolstack record ENGINE_COMPAT (0x80000201)");
    assert.equal(err.detail, "the source runs qemu 7.2.22 pc, this host qemu 8.0.0 pc: a device state from one cannot be loaded by the other");
    assert.ok(!err.message.includes("\n"));
    return true;
  });
  assert.equal(dst.ram()[3 * PAGE_SIZE], 0, "no page applied");
  assert.ok(!dst.calls.includes("resume"));

  const emuHost = await started("emu", "v86 0.5.462+g5f9a90f state 2");
  await assert.rejects(restoreInto(bytes, emuHost), /the source runs engine qemu \(qemu 7\.2\.22 pc\), this host engine emu \(v86 0\.5\.462\+g5f9a90f state 2\)/);

  const same = await started("qemu", "qemu 7.2.22 pc");
  await restoreInto(bytes, same);
  assert.equal(same.ram()[3 * PAGE_SIZE], 0x42);
});

test("writeImage with a survivor's link translations: LINK_TRANSLATION after ENGINE_COMPAT; readMachine returns its layers", async () => {
  const source = await started("emu", "v86 test state 1");
  const layers = [
    [{ guestIp: 1, guestPort: 2, peerIp: 3, peerPort: 4, svmIsn: 5, svmSynTsval: undefined, offset: 6, tsOffset: undefined, guestFinEnd: undefined, peerFinEnd: undefined, guestFinAcked: false, peerFinAcked: false }],
  ];
  const sink = new MemorySink();
  const writer = new StreamWriter(sink, { machine: machineHeader(source.id, source.memoryBytes) });
  await writeImage(source, writer, SAMPLE_VM_CONFIG, { live: false, pause: async () => {} }, layers);
  const records = await readAll(sink.bytes(), { requireEndOfSource: true });
  assert.deepEqual(records.slice(0, 3).map((r) => r.kind), ["vm-config", "engine-compat", "link-translation"]);
  const reader = new StreamReader(sink.bytes(), { requireEndOfSource: true });
  await readConfig(reader, "test image");
  const r = await readMachine(await started("emu", "v86 test state 1"), reader);
  assert.deepEqual(r.linkLayers, layers);
  // Without translations none is written, and none is read.
  const plain = await readAll(await imageOf(source), { requireEndOfSource: true });
  assert.ok(!plain.some((x) => x.kind === "link-translation"));
});
