import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ENGINE_NAMES, parseVmConfig, type VmConfig } from "../config/index.js";
import { FakeEngine } from "../engine/testing/fake-engine.js";
import { EmuEngine } from "../engine/emu/emu-engine.js";
import type { EngineId } from "../engine/engine.js";
import { engineFactory } from "./engine-factory.js";
import type { GuestStop } from "./guest-stop.js";
import { Vm } from "./vm.js";
import { VmError } from "./errors.js";

/** A config whose kernel is a small file in a fresh folder (the fake engine never runs it). */
function fixture(t: { after: (fn: () => void) => void }, extra = ""): VmConfig {
  const dir = mkdtempSync(join(tmpdir(), "colo-vm-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "vmlinuz"), Buffer.alloc(16));
  writeFileSync(join(dir, "data.img"), Buffer.alloc(4096));
  const file = join(dir, "guest.cfg");
  return parseVmConfig(`name = 'guest'\nkernel = 'vmlinuz'\nmemory = 32\n${extra}`, file);
}

test("engine factory: every engine name builds an engine whose id is that name", () => {
  const spec = { memoryBytes: 32 * 2 ** 20, kernel: new Uint8Array(16), cmdline: "", disks: [] };
  for (const name of ENGINE_NAMES) {
    const engine = engineFactory(name)(spec, {});
    assert.equal(engine.id, name);
    assert.equal(engine.memoryBytes, spec.memoryBytes);
  }
  assert.ok(engineFactory("emu")(spec, { nicModel: "ne2k" }) instanceof EmuEngine);
});

test("vm: the engine is built by the factory of the config's engine name, from the config", async (t) => {
  const config = fixture(t, "extra = 'console=ttyS0'\n");
  let built: FakeEngine | undefined;
  const vm = new Vm(config, {
    attachNetwork: false,
    buildEngine: (spec) => {
      built = new FakeEngine(spec);
      return built;
    },
  });
  await vm.start();
  t.after(() => vm.destroy());
  assert.ok(built);
  assert.equal(built.spec.memoryBytes, 32 * 2 ** 20);
  assert.match(built.spec.cmdline, /^console=ttyS0 colo\.hostname=guest$/);
  assert.deepEqual(built.calls, ["start"]);
  assert.equal(vm.machine, built);
});

test("vm status: reports the engine that runs (its id), not the config's engine name", async (t) => {
  const config = fixture(t);
  assert.equal(config.engine, "emu");
  const otherId: EngineId = "kvm";
  const vm = new Vm(config, { attachNetwork: false, buildEngine: (spec) => new FakeEngine(spec, otherId) });
  assert.equal(vm.status().engine, undefined, "no engine before start");
  await vm.start();
  t.after(() => vm.destroy());
  assert.equal(vm.status().engine, "kvm");
  assert.equal(vm.status().state, "running");
});

/** A Vm over fake engines: every engine it builds, in order. */
async function fakeVm(t: { after: (fn: () => Promise<void>) => void }, config: VmConfig, failBuild?: (n: number) => boolean) {
  const engines: FakeEngine[] = [];
  const vm = new Vm(config, {
    attachNetwork: false,
    buildEngine: (spec) => {
      if (failBuild?.(engines.length)) throw new Error("no engine this time");
      const e = new FakeEngine(spec);
      engines.push(e);
      return e;
    },
  });
  await vm.start();
  t.after(() => vm.destroy());
  const stops: GuestStop[] = [];
  vm.onGuestStop((s) => stops.push(s));
  return { vm, engines, stops };
}

function only<T>(items: readonly T[], index: number): T {
  const item = items[index];
  if (item === undefined) throw new Error(`no item ${index} of ${items.length}`);
  return item;
}

test("vm: engine events reach the guest-stop listeners as poweroff, reboot, crash; status shows the last", async (t) => {
  const { vm, engines, stops } = await fakeVm(t, fixture(t));
  const engine = only(engines, 0);
  engine.emit({ kind: "poweroff" });
  engine.emit({ kind: "reboot" });
  engine.emit({ kind: "fault", message: "v86 failed" });
  assert.deepEqual(
    stops.map((s) => [s.kind, s.message]),
    [
      ["poweroff", undefined],
      ["reboot", undefined],
      ["crash", "v86 failed"],
    ],
  );
  assert.equal(vm.status().guestStop?.kind, "crash");
  assert.equal(vm.state, "running", "the VM does nothing by itself: its listener decides");
});

test("vm restart: a new engine from the same config; the old one destroyed and no longer heard; disks unhooked", async (t) => {
  const config = fixture(t, "disk = [ 'vdev=hda, target=data.img' ]\n");
  const { vm, engines, stops } = await fakeVm(t, config);
  const first = only(engines, 0);
  const slot = only(vm.diskSlots(), 0);
  slot.interpose(new FakeLayer(slot.byteLength));
  slot.raw.onWrite = () => assert.fail("a hook from before the restart");
  first.emit({ kind: "reboot" });
  assert.equal(vm.status().guestStop?.kind, "reboot");
  await vm.restart();
  const second = only(engines, 1);
  assert.equal(first.isDestroyed, true);
  assert.deepEqual(second.calls, ["start"]);
  assert.equal(vm.machine, second);
  assert.equal(vm.state, "running");
  assert.equal(vm.status().guestStop, undefined, "the new machine has not stopped");
  assert.equal(vm.diskSlots().length, 1, "the same disks");
  assert.equal(slot.interposed, false, "replication's layer is gone");
  slot.write(0, new Uint8Array(512));
  first.emit({ kind: "poweroff" });
  assert.equal(stops.length, 1, "the replaced engine is not heard");
  second.emit({ kind: "poweroff" });
  assert.deepEqual(stops.map((s) => s.kind), ["reboot", "poweroff"], "listeners stay across the restart");
});

test("vm restart: only a started VM restarts; a failed restart destroys the VM", async (t) => {
  const config = fixture(t);
  await assert.rejects(new Vm(config, { attachNetwork: false }).restart(), (e: unknown) => e instanceof VmError && e.code === "STATE");
  const { vm, engines } = await fakeVm(t, config, (n) => n === 1);
  await assert.rejects(vm.restart(), /no engine this time/);
  assert.equal(vm.state, "destroyed");
  assert.equal(only(engines, 0).isDestroyed, true);
});

/** A replication layer stand-in. */
class FakeLayer {
  constructor(readonly byteLength: number) {}
  read(_offset: number, length: number): Uint8Array {
    return new Uint8Array(length);
  }
  write(): void {
    assert.fail("the layer is gone after the restart");
  }
}

test("vm: an unpause called while a pause is on its way waits for it and unpauses (the VM ends running)", async (t) => {
  const config = fixture(t);
  let engine: FakeEngine | undefined;
  const vm = new Vm(config, {
    attachNetwork: false,
    buildEngine: (spec) => {
      engine = new FakeEngine(spec);
      return engine;
    },
  });
  await vm.start();
  t.after(() => vm.destroy());
  // Neither awaited before the other is called: a lost secondary's "run on unprotected" during a checkpoint's pause.
  const paused = vm.pause();
  const unpaused = vm.unpause();
  await Promise.all([paused, unpaused]);
  assert.equal(vm.status().state, "running");
  assert.equal(engine?.running, true);
  assert.deepEqual(engine?.calls, ["start", "pause", "resume"]);
  // Turns still check the state they find: after destroy, an unpause is refused.
  await vm.pause();
  const destroyed = vm.destroy();
  await assert.rejects(vm.unpause(), /cannot unpause a VM that is destroyed/);
  await destroyed;
});
