import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeModuleElf } from "./elf-testing.js";
import { GuestBuildError } from "./errors.js";
import { type ModuleCatalog, type ModuleFacts, collectModules, moduleLoadOrder, parseModulesBuiltin } from "./kernel-modules.js";
import { AMD64_TARGET, I386_TARGET } from "./target.js";

const VIRTIO_NET = I386_TARGET.moduleSets["virtio-net"] ?? [];

/** A synthetic kernel: name → [depends, softdep pre, aliases]. */
type Kernel = Record<string, [string[], string[]?, string[]?]>;

function catalog(kernel: Kernel, builtin: string[] = []): ModuleCatalog {
  return {
    release: "6.1.0-99-686",
    facts: (name): Promise<ModuleFacts | undefined> => {
      const k = kernel[name];
      return Promise.resolve(k === undefined ? undefined : { name, depends: k[0], softdepsPre: k[1] ?? [] });
    },
    isBuiltin: (name) => builtin.includes(name),
    providers: (alias) => Promise.resolve(Object.keys(kernel).filter((n) => (kernel[n]?.[2] ?? []).includes(alias)).sort()),
  };
}

/** Debian 6.1.0-57-686 (6.1.192-3): virtio depends on virtio_ring, the reverse of the order hard-coded before. */
const KERNEL_57: Kernel = {
  virtio_ring: [[]],
  virtio: [["virtio_ring"]],
  virtio_pci_modern_dev: [[]],
  virtio_pci_legacy_dev: [[]],
  virtio_pci: [["virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio", "virtio_ring"]],
  failover: [[]],
  net_failover: [["failover"]],
  virtio_net: [["net_failover", "virtio", "virtio_ring"]],
  crc32c_generic: [[], [], ["crypto_crc32c", "crc32c"]],
  crc32c_intel: [[], [], ["crypto_crc32c", "crc32c"]],
  jbd2: [[], ["crc32c"]],
  mbcache: [[]],
  crc16: [[]],
  ext4: [["mbcache", "jbd2", "crc16"], ["crypto_crc32c"]],
};

function assertBefore(order: readonly string[], kernel: Kernel): void {
  for (const [i, name] of order.entries()) {
    for (const dep of kernel[name]?.[0] ?? []) assert.ok(order.indexOf(dep) >= 0 && order.indexOf(dep) < i, `${dep} before ${name} in ${order.join(",")}`);
  }
  assert.equal(new Set(order).size, order.length, "each module once");
}

test("load order is the dependency closure, dependencies first, whatever order the kernel declares", async () => {
  const order = await moduleLoadOrder("virtio-net", VIRTIO_NET, catalog(KERNEL_57));
  assert.deepEqual(order, ["virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_ring", "virtio", "virtio_pci", "failover", "net_failover", "virtio_net"]);
  assertBefore(order, KERNEL_57);
  // The older kernel's direction (virtio_ring depends on virtio) gives the other order, with no change to the set.
  const older: Kernel = { ...KERNEL_57, virtio: [[]], virtio_ring: [["virtio"]] };
  const olderOrder = await moduleLoadOrder("virtio-net", VIRTIO_NET, catalog(older));
  assert.ok(olderOrder.indexOf("virtio") < olderOrder.indexOf("virtio_ring"));
  assertBefore(olderOrder, older);
});

test("soft dependencies by alias pick the portable _generic provider; a built-in module is not loaded", async () => {
  const order = await moduleLoadOrder("disk", ["ext4"], catalog(KERNEL_57));
  assert.deepEqual(order, ["mbcache", "crc32c_generic", "jbd2", "crc16", "ext4"]);
  assert.ok(!order.includes("crc32c_intel"));
  const withBuiltinJbd2 = await moduleLoadOrder("disk", ["ext4"], catalog(KERNEL_57, ["jbd2"]));
  assert.deepEqual(withBuiltinJbd2, ["mbcache", "crc16", "crc32c_generic", "ext4"]);
});

test("a missing module is named with the chain that needs it; cycles and ambiguous aliases are refused", async () => {
  const noRing: Kernel = { ...KERNEL_57 };
  delete noRing.virtio_ring;
  await assert.rejects(
    moduleLoadOrder("virtio-net", VIRTIO_NET, catalog(noRing)),
    (e: unknown) =>
      e instanceof GuestBuildError &&
      e.code === "MODULE_INVALID" &&
      /module set virtio-net: kernel 6\.1\.0-99-686 has no module virtio_ring \(needed by virtio <- virtio_pci\)/.test(e.message),
  );
  await assert.rejects(moduleLoadOrder("x", ["nosuch-mod"], catalog(KERNEL_57)), /has no module nosuch_mod \(listed in the set\)/);
  await assert.rejects(moduleLoadOrder("x", ["a"], catalog({ a: [["b"]], b: [["a"]] })), /dependency cycle a -> b -> a/);
  const twoFast: Kernel = { fs: [[], ["crc"]], crc_a: [[], [], ["crc"]], crc_b: [[], [], ["crc"]] };
  await assert.rejects(moduleLoadOrder("x", ["fs"], catalog(twoFast)), /fs's soft dependency crc is provided by crc_a, crc_b/);
});

test("modules.builtin paths become canonical names", () => {
  assert.deepEqual([...parseModulesBuiltin("kernel/fs/ext4/ext4.ko\nkernel/drivers/ata/ata-generic.ko\n\n")], ["ext4", "ata_generic"]);
});

test("collectModules reads a kernel's module tree (synthetic .ko files) and computes every set", async (t) => {
  const root = await mkdtemp(join(tmpdir(), "colo-mods-"));
  t.after(() => rm(root, { recursive: true, force: true }));
  const release = "6.1.0-99-686";
  const dir = join(root, "lib", "modules", release, "kernel");
  const mods: Record<string, string> = {
    ...Object.fromEntries(Object.entries(KERNEL_57).map(([n, [deps, soft, aliases]]) => [n, info(n, deps, soft ?? [], aliases ?? [])])),
    "ne2k-pci": info("ne2k_pci", ["8390"], [], []),
    "8390": info("8390", [], [], []),
    ata_piix: info("ata_piix", ["libata"], [], []),
    "ata-generic": info("ata_generic", ["libata"], [], []),
    libata: info("libata", ["scsi_mod"], [], []),
    scsi_mod: info("scsi_mod", ["scsi_common"], [], []),
    scsi_common: info("scsi_common", [], [], []),
    sd_mod: info("sd_mod", ["scsi_mod", "scsi_common"], [], []),
  };
  await mkdir(dir, { recursive: true });
  for (const [file, text] of Object.entries(mods)) await writeFile(join(dir, `${file}.ko`), makeModuleElf(false, text));
  await writeFile(join(root, "lib", "modules", release, "modules.builtin"), "kernel/lib/crc16.ko\n");
  const sets = await collectModules(root, release, I386_TARGET.moduleSets);
  assert.deepEqual(sets.ne2k?.map((m) => m.name), ["8390", "ne2k_pci"]);
  assert.deepEqual(
    sets.disk?.map((m) => m.name),
    ["scsi_common", "scsi_mod", "libata", "ata_piix", "ata_generic", "sd_mod", "mbcache", "crc32c_generic", "jbd2", "ext4"],
  );
  assert.equal(sets["virtio-net"]?.length, 8);
  assert.ok(sets.disk?.every((m) => m.data.length > 0 && m.source.endsWith(".ko")));
});

test("amd64 module sets: virtio-net and a virtio-blk disk with its PCI transport; no ne2k, no ATA", async (t) => {
  const root = await mkdtemp(join(tmpdir(), "colo-mods64-"));
  t.after(() => rm(root, { recursive: true, force: true }));
  const release = "6.1.0-99-amd64";
  const dir = join(root, "lib", "modules", release, "kernel");
  const mods: Record<string, string> = {
    ...Object.fromEntries(Object.entries(KERNEL_57).map(([n, [deps, soft, aliases]]) => [n, info(n, deps, soft ?? [], aliases ?? [])])),
    virtio_blk: info("virtio_blk", ["virtio", "virtio_ring"], [], []),
  };
  await mkdir(dir, { recursive: true });
  for (const [file, text] of Object.entries(mods)) await writeFile(join(dir, `${file}.ko`), makeModuleElf(true, text));
  await writeFile(join(root, "lib", "modules", release, "modules.builtin"), "kernel/lib/crc16.ko\n");
  const sets = await collectModules(root, release, AMD64_TARGET.moduleSets);
  assert.deepEqual(Object.keys(sets).sort(), ["disk", "virtio-net"]);
  assert.deepEqual(
    sets.disk?.map((m) => m.name),
    ["virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_ring", "virtio", "virtio_pci", "virtio_blk", "mbcache", "crc32c_generic", "jbd2", "ext4"],
  );
  assert.deepEqual(sets["virtio-net"]?.map((m) => m.name).slice(-1), ["virtio_net"]);
  const all = Object.values(AMD64_TARGET.moduleSets).flat();
  for (const absent of ["ne2k-pci", "ata_piix", "ata_generic", "sd_mod"]) assert.ok(!all.includes(absent), absent);
});

function info(name: string, depends: string[], soft: string[], aliases: string[]): string {
  return [`name=${name}`, `depends=${depends.join(",")}`, ...(soft.length > 0 ? [`softdep=pre: ${soft.join(" ")}`] : []), ...aliases.map((a) => `alias=${a}`)].join("\0") + "\0";
}
