/**
 * The initrd's file tree, assembled from the unpacked guest packages by
 * reading files only: busybox (its applets are linked by /init at boot with
 * `busybox --install -s`), the kernel modules of kernel-modules.ts in load
 * order, Redis and memtester with the loader and the libraries their ELF
 * files ask for (shared-libraries.ts), and /init (guest/init.sh). The
 * target (target.ts) says which ELF machine and library directories, and
 * which module sets.
 */

import { readFile, readlink } from "node:fs/promises";
import { basename, join, posix } from "node:path";
import { CpioTree } from "./cpio.js";
import { GuestBuildError } from "./errors.js";
import { collectModules } from "./kernel-modules.js";
import { type GuestManifest, manifestText } from "./manifest.js";
import type { GuestPackageSet } from "./package-set.js";
import { resolveInTree, sharedLibraryClosure } from "./shared-libraries.js";
import { type GuestTarget, MODULE_SET_NAMES } from "./target.js";

/** linux/Documentation/admin-guide/devices.txt: 5,1 = /dev/console (opened by the kernel before /init runs). */
const CONSOLE_MAJOR = 5;
const CONSOLE_MINOR = 1;
/** memtester inside the initrd: where Debian's package puts it (on PATH in the guest). */
export const MEMTESTER_PATH = "usr/sbin/memtester";
/**
 * Directories busybox's applets go to (busybox `--install -s` without DIR
 * links each applet at its configured path: /bin, /sbin, /usr/bin,
 * /usr/sbin; it does not create directories).
 */
export const APPLET_DIRS = ["bin", "sbin", "usr/bin", "usr/sbin"];
/** The kernel runs /init with the interpreter of its #! line: this one link must exist before /init runs. */
const INIT_SHELL = "bin/sh";

function moduleSetText(names: readonly string[]): string {
  return names.map((n) => `${n}\n`).join("");
}

async function exists(root: string, rel: string): Promise<boolean> {
  return (await resolveInTree(root, rel)) !== undefined;
}

async function requireFile(root: string, rel: string, what: string): Promise<string> {
  const resolved = await resolveInTree(root, rel);
  if (resolved === undefined) throw new GuestBuildError("FILE_MISSING", `${what}: ${join(root, rel)} does not exist`);
  return resolved;
}

export interface InitrdInputs {
  pkgs: GuestPackageSet;
  manifest: GuestManifest;
  initScript: Uint8Array;
  /** Where the kernel package is unpacked. */
  kernelRoot: string;
  /** Where busybox, Redis, memtester and the libraries are unpacked. */
  userRoot: string;
  /** The guest: its ABI (ELF machine, library directories) and module sets. */
  target: GuestTarget;
}

export async function buildInitrdTree(inputs: InitrdInputs): Promise<CpioTree> {
  const { pkgs, manifest, initScript, kernelRoot, userRoot, target } = inputs;
  const abi = target.abi;
  const tree = new CpioTree();
  for (const dir of ["dev", "proc", "sys", "run", "data", "etc", ...APPLET_DIRS]) tree.addDirectory(dir);
  tree.addDirectory("tmp", 0o1777);
  tree.addDirectory("root", 0o700);
  tree.addCharDevice("dev/console", CONSOLE_MAJOR, CONSOLE_MINOR, 0o600);
  tree.addFile("init", initScript, 0o755);
  tree.addFile("etc/passwd", Buffer.from("root:x:0:0:root:/root:/bin/sh\n"));
  tree.addFile("etc/group", Buffer.from("root:x:0:\n"));
  tree.addFile("etc/hosts", Buffer.from("127.0.0.1\tlocalhost\n"));
  tree.addFile("etc/colo/manifest.json", Buffer.from(manifestText(manifest)));

  // busybox: the binary and /bin/sh; /init links the other applets at boot.
  const busybox = await requireFile(userRoot, "bin/busybox", `${pkgs.busybox.name} ${pkgs.busybox.version}`);
  tree.addFile("bin/busybox", await readFile(join(userRoot, busybox)), 0o755);
  tree.addSymlink(INIT_SHELL, "busybox");

  // kernel modules, flat, plus the load order of each set the target has (/init skips a set without a file)
  const modules = await collectModules(kernelRoot, pkgs.kernelRelease, target.moduleSets);
  for (const setName of MODULE_SET_NAMES) {
    const list = modules[setName];
    if (list === undefined) continue;
    tree.addFile(`etc/colo/modules/${setName}`, Buffer.from(moduleSetText(list.map((m) => m.name))));
    for (const m of list) if (!tree.has(`lib/modules/${m.name}.ko`)) tree.addFile(`lib/modules/${m.name}.ko`, m.data);
  }

  // Redis: redis-check-rdb is the binary, redis-server a link to it (argv[0] selects the mode)
  const tools = `${pkgs.redisTools.name} ${pkgs.redisTools.version}`;
  const rdb = await requireFile(userRoot, "usr/bin/redis-check-rdb", tools);
  const cli = await requireFile(userRoot, "usr/bin/redis-cli", tools);
  const serverLink = join(userRoot, "usr", "bin", "redis-server");
  if (!(await exists(userRoot, "usr/bin/redis-server"))) {
    throw new GuestBuildError("FILE_MISSING", `${pkgs.redisServer.name} ${pkgs.redisServer.version}: ${serverLink} does not exist`);
  }
  const linkTarget = await readlink(serverLink).catch(() => "");
  if (basename(linkTarget) !== "redis-check-rdb") {
    throw new GuestBuildError("FILE_MISSING", `${serverLink} (${pkgs.redisServer.name}) is not a link to redis-check-rdb (target "${linkTarget}")`);
  }
  tree.addFile("usr/bin/redis-check-rdb", await readFile(join(userRoot, rdb)), 0o755);
  tree.addSymlink("usr/bin/redis-server", "redis-check-rdb");
  tree.addFile("usr/bin/redis-cli", await readFile(join(userRoot, cli)), 0o755);

  // memtester, where Debian puts it (for colo.memtest=SIZE)
  const memtester = await requireFile(userRoot, MEMTESTER_PATH, `${pkgs.memtester.name} ${pkgs.memtester.version}`);
  tree.addFile(MEMTESTER_PATH, await readFile(join(userRoot, memtester)), 0o755);

  // The loader at each binary's PT_INTERP path and the closure of their DT_NEEDED, read from the ELF files.
  const libDir = abi.libDirs[0] as string;
  const interpreters = new Set<string>();
  const libs = new Map<string, string>();
  for (const binary of [rdb, cli, memtester]) {
    const needs = await sharedLibraryClosure(userRoot, binary, abi);
    if (needs.interpreter !== undefined) interpreters.add(needs.interpreter);
    for (const lib of needs.libraries) libs.set(lib.soname, lib.path);
  }
  for (const interp of [...interpreters].sort()) {
    const rel = posix.normalize(interp).replace(/^\/+/, "");
    const found = await requireFile(userRoot, rel, `the loader ${interp} (libc6)`);
    tree.addFile(rel, await readFile(join(userRoot, found)), 0o755);
  }
  for (const [soname, path] of [...libs].sort(([a], [b]) => (a < b ? -1 : 1))) {
    tree.addFile(`${libDir}/${soname}`, await readFile(join(userRoot, path)), 0o755);
  }
  return tree;
}
