import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AccelError, resolveAccel } from "./accel.js";

/** A fake root with /dev/kvm (a plain file standing in for the device) and the named /sys/module entries. */
function fakeRoot(t: TestContext, opts: { kvm: boolean; modules: string[]; kvmMode?: number }): string {
  const root = mkdtempSync(join(tmpdir(), "accel-test-"));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(join(root, "dev"));
  mkdirSync(join(root, "sys/module"), { recursive: true });
  if (opts.kvm) {
    writeFileSync(join(root, "dev/kvm"), "");
    chmodSync(join(root, "dev/kvm"), opts.kvmMode ?? 0o666);
  }
  for (const m of ["kvm", ...opts.modules]) mkdirSync(join(root, "sys/module", m));
  return root;
}

function accelError(code: string, why: RegExp): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof AccelError);
    assert.equal(err.code, code);
    assert.match(err.message, why);
    return true;
  };
}

test("accel: tcg is always tcg", (t) => {
  assert.equal(resolveAccel("tcg", { root: fakeRoot(t, { kvm: true, modules: ["kvm_intel"] }) }).accel, "tcg");
});

test("accel: hardware KVM (kvm_intel or kvm_amd serving /dev/kvm) is chosen by auto and accepted by kvm", (t) => {
  for (const module of ["kvm_intel", "kvm_amd"]) {
    const root = fakeRoot(t, { kvm: true, modules: [module] });
    assert.deepEqual(resolveAccel("auto", { root }), { accel: "kvm", why: `${module} serves /dev/kvm` });
    assert.equal(resolveAccel("kvm", { root }).accel, "kvm");
  }
});

test("accel: kvm_pvm behind /dev/kvm gives TCG for auto and a reason for kvm", (t) => {
  const root = fakeRoot(t, { kvm: true, modules: ["kvm_pvm"] });
  const auto = resolveAccel("auto", { root });
  assert.equal(auto.accel, "tcg");
  assert.match(auto.why, /kvm_pvm, a software hypervisor/);
  assert.throws(() => resolveAccel("kvm", { root }), accelError("SOFTWARE_KVM", /accel=kvm cannot work on this host: .*kvm_pvm, a software hypervisor that runs no stock kernel/));
});

test("accel: no /dev/kvm; /dev/kvm without a hardware module", (t) => {
  const none = fakeRoot(t, { kvm: false, modules: ["kvm_intel"] });
  assert.equal(resolveAccel("auto", { root: none }).accel, "tcg");
  assert.throws(() => resolveAccel("kvm", { root: none }), accelError("NO_KVM_DEVICE", /no .*dev\/kvm/));
  const bare = fakeRoot(t, { kvm: true, modules: [] });
  assert.equal(resolveAccel("auto", { root: bare }).accel, "tcg");
  assert.throws(() => resolveAccel("kvm", { root: bare }), accelError("NO_HARDWARE_KVM", /neither kvm_intel nor kvm_amd/));
});

test("accel: /dev/kvm we may not open is refused with why", (t) => {
  if (process.getuid?.() === 0) {
    t.skip("root can open any file: the permission check cannot be seen");
    return;
  }
  const root = fakeRoot(t, { kvm: true, modules: ["kvm_amd"], kvmMode: 0o000 });
  assert.throws(() => resolveAccel("kvm", { root }), accelError("KVM_NOT_ACCESSIBLE", /not readable and writable/));
});

test("accel: a host with kvm_pvm loaded (these build machines, ENGINE-NOTES.md) resolves auto to TCG", (t) => {
  if (!existsSync("/sys/module/kvm_pvm")) {
    t.skip("kvm_pvm is not loaded on this host");
    return;
  }
  const choice = resolveAccel("auto");
  assert.equal(choice.accel, "tcg", choice.why);
});
