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
import { Vm } from "./vm.js";

/** A config whose kernel is a small file in a fresh folder (the fake engine never runs it). */
function fixture(t: { after: (fn: () => void) => void }, extra = ""): VmConfig {
  const dir = mkdtempSync(join(tmpdir(), "colo-vm-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "vmlinuz"), Buffer.alloc(16));
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
