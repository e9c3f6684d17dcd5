import { test } from "node:test";
import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type { AptPackage } from "./apt.js";
import { EM_X86_64 } from "./elf.js";
import { makeDynamicElf, makeModuleElf } from "./elf-testing.js";
import { GuestBuildError } from "./errors.js";
import { buildInitrdTree } from "./initrd-tree.js";
import { BUILDER_FORMAT } from "./manifest.js";
import type { GuestPackageSet } from "./package-set.js";
import { forbidExecutionUnder, run } from "./run.js";
import { AMD64_TARGET, type GuestTarget, I386_TARGET } from "./target.js";

const RELEASE = "6.1.0-99-686";

function pkg(name: string, architecture = "i386"): AptPackage {
  return { name, version: "1.0-1", architecture, depends: [], sha256: undefined };
}

async function put(root: string, rel: string, data: Uint8Array | string, mode = 0o644): Promise<void> {
  await mkdir(dirname(join(root, rel)), { recursive: true });
  await writeFile(join(root, rel), data);
  await chmod(join(root, rel), mode);
}

/**
 * Unpacked packages shaped like Debian's, where every program the old
 * builder ran (busybox --list-full, the loader's --list) is a host shell
 * script that appends to `marker` when executed: if the builder spawns any
 * of them, the marker file appears. The ELF files are i386 and cannot run here.
 */
async function unpackedTrees(): Promise<{ root: string; kernelRoot: string; userRoot: string; marker: string }> {
  const root = await mkdtemp(join(tmpdir(), "colo-initrd-"));
  const kernelRoot = join(root, "kernel");
  const userRoot = join(root, "userland");
  const marker = join(root, "EXECUTED");
  const spy = `#!/bin/sh\necho "$0 $*" >> '${marker}'\n`;
  await put(userRoot, "bin/busybox", spy, 0o755);
  await put(userRoot, "lib/i386-linux-gnu/ld-linux.so.2", spy, 0o755);
  await mkdir(join(userRoot, "lib"), { recursive: true });
  await symlink("/lib/i386-linux-gnu/ld-linux.so.2", join(userRoot, "lib/ld-linux.so.2"));
  const prog = (needed: string[]): Buffer => makeDynamicElf({ interpreter: "/lib/ld-linux.so.2", needed });
  await put(userRoot, "usr/bin/redis-check-rdb", prog(["libssl.so.3", "libc.so.6"]), 0o755);
  await symlink("redis-check-rdb", join(userRoot, "usr/bin/redis-server"));
  await put(userRoot, "usr/bin/redis-cli", prog(["libc.so.6"]), 0o755);
  await put(userRoot, "usr/sbin/memtester", prog(["libc.so.6"]), 0o755);
  await put(userRoot, "usr/lib/i386-linux-gnu/libssl.so.3", makeDynamicElf({ soname: "libssl.so.3", needed: ["libc.so.6"] }));
  await put(userRoot, "lib/i386-linux-gnu/libc.so.6", makeDynamicElf({ soname: "libc.so.6", needed: ["ld-linux.so.2"] }));
  const mod = (name: string, depends: string[], extra = ""): Buffer => makeModuleElf(false, `name=${name}\0depends=${depends.join(",")}\0${extra}`);
  const modules: Record<string, Buffer> = {
    virtio_ring: mod("virtio_ring", []),
    virtio: mod("virtio", ["virtio_ring"]),
    virtio_pci: mod("virtio_pci", ["virtio", "virtio_ring"]),
    failover: mod("failover", []),
    net_failover: mod("net_failover", ["failover"]),
    virtio_net: mod("virtio_net", ["net_failover", "virtio", "virtio_ring"]),
    "8390": mod("8390", []),
    "ne2k-pci": mod("ne2k_pci", ["8390"]),
    libata: mod("libata", []),
    ata_piix: mod("ata_piix", ["libata"]),
    "ata-generic": mod("ata_generic", ["libata"]),
    sd_mod: mod("sd_mod", []),
    crc32c_generic: mod("crc32c_generic", [], "alias=crypto-crc32c\0"),
    ext4: mod("ext4", [], "softdep=pre: crypto-crc32c\0"),
  };
  for (const [file, data] of Object.entries(modules)) await put(kernelRoot, `lib/modules/${RELEASE}/kernel/${file}.ko`, data);
  return { root, kernelRoot, userRoot, marker };
}

const RELEASE_64 = "6.1.0-99-amd64";

/** The same, shaped like Debian amd64: x86-64 ELF files, the loader behind /lib64's absolute link, virtio-blk modules. */
async function unpackedTrees64(): Promise<{ root: string; kernelRoot: string; userRoot: string }> {
  const root = await mkdtemp(join(tmpdir(), "colo-initrd64-"));
  const kernelRoot = join(root, "kernel");
  const userRoot = join(root, "userland");
  const elf = (spec: Parameters<typeof makeDynamicElf>[0]): Buffer => makeDynamicElf({ is64: true, machine: EM_X86_64, ...spec });
  await put(userRoot, "bin/busybox", "busybox", 0o755);
  await put(userRoot, "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", elf({ soname: "ld-linux-x86-64.so.2" }), 0o755);
  await mkdir(join(userRoot, "lib64"), { recursive: true });
  await symlink("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", join(userRoot, "lib64/ld-linux-x86-64.so.2"));
  const prog = (needed: string[]): Buffer => elf({ interpreter: "/lib64/ld-linux-x86-64.so.2", needed });
  await put(userRoot, "usr/bin/redis-check-rdb", prog(["libssl.so.3", "libc.so.6"]), 0o755);
  await symlink("redis-check-rdb", join(userRoot, "usr/bin/redis-server"));
  await put(userRoot, "usr/bin/redis-cli", prog(["libc.so.6"]), 0o755);
  await put(userRoot, "usr/sbin/memtester", prog(["libc.so.6"]), 0o755);
  await put(userRoot, "usr/lib/x86_64-linux-gnu/libssl.so.3", elf({ soname: "libssl.so.3", needed: ["libc.so.6"] }));
  await put(userRoot, "lib/x86_64-linux-gnu/libc.so.6", elf({ soname: "libc.so.6", needed: ["ld-linux-x86-64.so.2"] }));
  const mod = (name: string, depends: string[], extra = ""): Buffer => makeModuleElf(true, `name=${name}\0depends=${depends.join(",")}\0${extra}`);
  const modules: Record<string, Buffer> = {
    virtio_ring: mod("virtio_ring", []),
    virtio: mod("virtio", ["virtio_ring"]),
    virtio_pci: mod("virtio_pci", ["virtio", "virtio_ring"]),
    failover: mod("failover", []),
    net_failover: mod("net_failover", ["failover"]),
    virtio_net: mod("virtio_net", ["net_failover", "virtio", "virtio_ring"]),
    virtio_blk: mod("virtio_blk", ["virtio", "virtio_ring"]),
    crc32c_generic: mod("crc32c_generic", [], "alias=crypto-crc32c\0"),
    crc32c_intel: mod("crc32c_intel", [], "alias=crypto-crc32c\0"),
    ext4: mod("ext4", [], "softdep=pre: crypto-crc32c\0"),
  };
  for (const [file, data] of Object.entries(modules)) await put(kernelRoot, `lib/modules/${RELEASE_64}/kernel/${file}.ko`, data);
  return { root, kernelRoot, userRoot };
}

function packageSet(target: GuestTarget = I386_TARGET): GuestPackageSet {
  const release = target === I386_TARGET ? RELEASE : RELEASE_64;
  const names = [target.kernel.metapackage, `linux-image-${release}`, "busybox-static", "redis-server", "redis-tools", "memtester", "libc6", "libssl3"];
  const all = names.map((n) => pkg(n, target.arch));
  const by = (n: string): AptPackage => all.find((p) => p.name === n) as AptPackage;
  return {
    kernelImage: by(`linux-image-${release}`),
    kernelRelease: release,
    busybox: by("busybox-static"),
    redisServer: by("redis-server"),
    redisTools: by("redis-tools"),
    memtester: by("memtester"),
    libraries: [by("libc6"), by("libssl3")],
    all,
  };
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

test("the spy works: running a program of the tree leaves the marker (so its absence below means nothing ran)", async (t) => {
  const { root, userRoot, marker } = await unpackedTrees();
  t.after(() => rm(root, { recursive: true, force: true }));
  await run(join(userRoot, "bin/busybox"), ["--list-full"]);
  assert.match(await readFile(marker, "utf8"), /busybox --list-full/);
});

test("the initrd tree is built from the unpacked packages without executing anything in them", async (t) => {
  const { root, kernelRoot, userRoot, marker } = await unpackedTrees();
  t.after(() => rm(root, { recursive: true, force: true }));
  const manifest = { format: BUILDER_FORMAT, arch: "i386", kernelRelease: RELEASE, packages: {}, inputs: {} };
  const tree = await buildInitrdTree({ pkgs: packageSet(), manifest, initScript: Buffer.from("#!/bin/sh\n"), kernelRoot, userRoot, target: I386_TARGET });
  assert.equal(await exists(marker), false, `the builder executed guest code: ${await readFile(marker, "utf8").catch(() => "")}`);

  const entries = new Map(tree.entries().map((e) => [e.path, e]));
  const file = (p: string): string => {
    const e = entries.get(p);
    assert.ok(e !== undefined && e.type === "file", `${p} is a file in the initrd`);
    return Buffer.from(e.data).toString("latin1");
  };
  assert.deepEqual(entries.get("bin/sh"), { type: "symlink", path: "bin/sh", target: "busybox" });
  assert.ok(!entries.has("bin/ls") && !entries.has("sbin/insmod"), "applet links are made by /init at boot, not by the build");
  for (const d of ["bin", "sbin", "usr/bin", "usr/sbin"]) assert.equal(entries.get(d)?.type, "directory", `${d} exists for busybox --install -s`);
  assert.equal(file("etc/colo/modules/virtio-net"), "virtio_ring\nvirtio\nvirtio_pci\nfailover\nnet_failover\nvirtio_net\n");
  assert.equal(file("etc/colo/modules/ne2k"), "8390\nne2k_pci\n");
  assert.equal(file("etc/colo/modules/disk"), "libata\nata_piix\nata_generic\nsd_mod\ncrc32c_generic\next4\n");
  for (const m of ["virtio_ring", "ne2k_pci", "ext4", "crc32c_generic"]) file(`lib/modules/${m}.ko`);
  assert.match(file("lib/ld-linux.so.2"), /^#!\/bin\/sh/); // the loader, copied from behind its absolute link
  file("lib/i386-linux-gnu/libc.so.6");
  file("lib/i386-linux-gnu/libssl.so.3");
  assert.ok(!entries.has("lib/i386-linux-gnu/ld-linux.so.2"), "libc's DT_NEEDED on the loader is the loader itself");
  assert.deepEqual(entries.get("usr/bin/redis-server"), { type: "symlink", path: "usr/bin/redis-server", target: "redis-check-rdb" });
  file("usr/sbin/memtester");
});

test("amd64: the loader at its PT_INTERP path /lib64/ld-linux-x86-64.so.2, libraries in lib/x86_64-linux-gnu, the virtio-net and virtio-blk sets only", async (t) => {
  const { root, kernelRoot, userRoot } = await unpackedTrees64();
  t.after(() => rm(root, { recursive: true, force: true }));
  const manifest = { format: BUILDER_FORMAT, arch: "amd64", kernelRelease: RELEASE_64, packages: {}, inputs: {} };
  const pkgs = packageSet(AMD64_TARGET);
  const tree = await buildInitrdTree({ pkgs, manifest, initScript: Buffer.from("#!/bin/sh\n"), kernelRoot, userRoot, target: AMD64_TARGET });
  const entries = new Map(tree.entries().map((e) => [e.path, e]));
  const file = (p: string): string => {
    const e = entries.get(p);
    assert.ok(e !== undefined && e.type === "file", `${p} is a file in the initrd`);
    return Buffer.from(e.data).toString("latin1");
  };
  assert.match(file("lib64/ld-linux-x86-64.so.2"), /^\x7fELF/); // the loader itself, from behind its absolute link
  assert.equal(entries.get("lib64")?.type, "directory");
  file("lib/x86_64-linux-gnu/libc.so.6");
  file("lib/x86_64-linux-gnu/libssl.so.3");
  assert.ok(!entries.has("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"), "libc's DT_NEEDED on the loader is the loader itself");
  assert.equal(file("etc/colo/modules/virtio-net"), "virtio_ring\nvirtio\nvirtio_pci\nfailover\nnet_failover\nvirtio_net\n");
  assert.equal(file("etc/colo/modules/disk"), "virtio_ring\nvirtio\nvirtio_pci\nvirtio_blk\ncrc32c_generic\next4\n");
  assert.ok(!entries.has("etc/colo/modules/ne2k"), "no ne2k set: /init skips it");
  assert.ok(![...entries.keys()].some((p) => /ne2k|ata_|sd_mod|i386/.test(p)), "nothing of the i386 guest");

  // An i386 binary in the amd64 tree is refused, naming both machines.
  await put(userRoot, "usr/sbin/memtester", makeDynamicElf({ interpreter: "/lib/ld-linux.so.2", needed: ["libc.so.6"] }), 0o755);
  await assert.rejects(
    buildInitrdTree({ pkgs, manifest, initScript: Buffer.from("#!/bin/sh\n"), kernelRoot, userRoot, target: AMD64_TARGET }),
    /ELF machine 3, the amd64 guest needs 62/,
  );
});

test("while the build runs, run() refuses any program inside the unpacked tree, before spawning it", async (t) => {
  const { root, userRoot, marker } = await unpackedTrees();
  t.after(() => rm(root, { recursive: true, force: true }));
  const allow = forbidExecutionUnder(root);
  try {
    await assert.rejects(
      run(join(userRoot, "bin/busybox"), ["--list-full"], { what: "listing applets" }),
      (e: unknown) => e instanceof GuestBuildError && e.code === "GUEST_CODE_ON_HOST" && e.message.includes("guest code never runs on the host"),
    );
    await assert.rejects(run("busybox", [], { env: { PATH: join(userRoot, "bin") } }), /GUEST_CODE_ON_HOST|belongs to the unpacked guest packages/);
    await assert.rejects(run("./lib/ld-linux.so.2", ["--list", "x"], { cwd: userRoot }), /belongs to the unpacked guest packages/);
  } finally {
    allow();
  }
  assert.equal(await exists(marker), false);
});
