import { test } from "node:test";
import assert from "node:assert/strict";
import { BUILDER_FORMAT, type GuestManifest, manifestChanges, manifestText, parseManifest, sameManifest } from "./manifest.js";

const base: GuestManifest = {
  format: BUILDER_FORMAT,
  arch: "i386",
  kernelRelease: "6.1.0-50-686",
  packages: { "redis-tools": "5:7.0.15-1~deb12u7", "busybox-static": "1:1.35.0-4+deb12u1+b1", memtester: "4.6.0-1" },
  inputs: { "init.sh": "aa", "module-sets": "bb" },
};

test("canonical text does not depend on key order and parses back", () => {
  const reordered: GuestManifest = {
    ...base,
    packages: { memtester: "4.6.0-1", "busybox-static": "1:1.35.0-4+deb12u1+b1", "redis-tools": "5:7.0.15-1~deb12u7" },
  };
  assert.equal(manifestText(base), manifestText(reordered));
  assert.ok(sameManifest(base, reordered));
  const back = parseManifest(manifestText(base));
  assert.ok(back !== undefined && sameManifest(back, base));
});

test("any version, input or format change makes a different manifest", () => {
  assert.ok(!sameManifest(base, { ...base, format: BUILDER_FORMAT + 1 }));
  assert.ok(!sameManifest(base, { ...base, kernelRelease: "6.1.0-51-686" }));
  const newer = { ...base, packages: { ...base.packages, "redis-tools": "5:7.0.15-1~deb12u8" } };
  assert.ok(!sameManifest(base, newer));
  assert.deepEqual(manifestChanges(base, newer), ["redis-tools 5:7.0.15-1~deb12u7 → 5:7.0.15-1~deb12u8"]);
  const added = { ...base, packages: { ...base.packages, libfoo1: "1.0" }, inputs: { ...base.inputs, "init.sh": "cc" } };
  assert.deepEqual(manifestChanges(base, added), ["libfoo1 (none) → 1.0", "input init.sh aa → cc"]);
  const { memtester: _dropped, ...withoutMemtester } = base.packages;
  assert.deepEqual(manifestChanges({ ...base, packages: withoutMemtester }, base), ["memtester (none) → 4.6.0-1"]);
});

test("unreadable manifests parse as undefined (the image is then rebuilt)", () => {
  assert.equal(parseManifest("not json"), undefined);
  assert.equal(parseManifest("null"), undefined);
  assert.equal(parseManifest(JSON.stringify({ ...base, format: "1" })), undefined);
  assert.equal(parseManifest(JSON.stringify({ ...base, packages: { a: 1 } })), undefined);
  assert.equal(parseManifest(JSON.stringify({ ...base, inputs: [] })), undefined);
});
