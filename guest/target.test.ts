import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { defaultGuestCacheDir, guestImagePaths, repoRoot } from "./build.js";
import { GUEST_DATA_DEVICES } from "./contract.js";
import { EM_386, EM_X86_64 } from "./elf.js";
import { AMD64_TARGET, GUEST_TARGETS, I386_TARGET, MODULE_SET_NAMES, guestTarget } from "./target.js";

test("the i386 target's module sets hash as they did before targets existed (its manifest does not change)", () => {
  const before = '{"virtio-net":["virtio_pci","virtio_net"],"ne2k":["ne2k-pci"],"disk":["ata_piix","ata_generic","sd_mod","ext4"]}';
  assert.equal(JSON.stringify(I386_TARGET.moduleSets), before);
  assert.equal(
    createHash("sha256").update(JSON.stringify(I386_TARGET.moduleSets)).digest("hex"),
    createHash("sha256").update(before).digest("hex"),
  );
});

test("the two targets: architecture, ELF machine, loader directories, kernel, devices", () => {
  assert.deepEqual(GUEST_TARGETS.map((t) => [t.arch, t.engine]), [["i386", "emu"], ["amd64", "qemu"]]);
  assert.equal(I386_TARGET.abi.machine, EM_386);
  assert.equal(AMD64_TARGET.abi.machine, EM_X86_64);
  assert.deepEqual(AMD64_TARGET.abi.libDirs.slice(0, 3), ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64"]);
  assert.equal(AMD64_TARGET.kernel.metapackage, "linux-image-amd64");
  assert.equal(AMD64_TARGET.kernel.imagePattern.exec("linux-image-6.1.0-57-amd64")?.[1], "6.1.0-57-amd64");
  assert.equal(AMD64_TARGET.kernel.imagePattern.exec("linux-image-6.1.0-57-cloud-amd64"), null);
  assert.equal(AMD64_TARGET.kernel.imagePattern.exec("linux-image-6.1.0-57-amd64-unsigned"), null);
  assert.equal(I386_TARGET.kernel.imagePattern.exec("linux-image-6.1.0-57-686-pae"), null);
  assert.deepEqual([I386_TARGET.kernel.form, AMD64_TARGET.kernel.form], ["bzImage", "pvh-vmlinux"]);
  assert.deepEqual(AMD64_TARGET.moduleSets, { "virtio-net": ["virtio_pci", "virtio_net"], disk: ["virtio_pci", "virtio_blk", "ext4"] });
  assert.deepEqual([I386_TARGET.dataDevice, AMD64_TARGET.dataDevice], ["/dev/sda", "/dev/vda"]);
  for (const t of GUEST_TARGETS) {
    assert.ok(GUEST_DATA_DEVICES.includes(t.dataDevice));
    for (const set of Object.keys(t.moduleSets)) assert.ok((MODULE_SET_NAMES as readonly string[]).includes(set), set);
  }
  assert.equal(guestTarget("amd64"), AMD64_TARGET);
  assert.throws(() => guestTarget("arm64"), /no guest for architecture "arm64" \(there are: i386, amd64\)/);
});

test("cache directories and image paths per target; i386 keeps .cache/guest/vmlinuz and initrd.img", () => {
  const cache = join(repoRoot(), ".cache");
  assert.equal(defaultGuestCacheDir(), join(cache, "guest"));
  assert.equal(defaultGuestCacheDir("amd64"), join(cache, "guest-amd64"));
  assert.deepEqual(guestImagePaths("i386"), {
    arch: "i386",
    kernel: join(cache, "guest", "vmlinuz"),
    vmlinux: undefined,
    bootKernel: join(cache, "guest", "vmlinuz"),
    initrd: join(cache, "guest", "initrd.img"),
    manifest: join(cache, "guest", "manifest.json"),
  });
  const amd64 = guestImagePaths(AMD64_TARGET);
  assert.equal(amd64.kernel, join(cache, "guest-amd64", "vmlinuz"));
  assert.equal(amd64.vmlinux, join(cache, "guest-amd64", "vmlinux"));
  assert.equal(amd64.bootKernel, amd64.vmlinux);
  assert.equal(amd64.initrd, join(cache, "guest-amd64", "initrd.img"));
  assert.equal(guestImagePaths("amd64", "/tmp/x").initrd, "/tmp/x/initrd.img");
});
