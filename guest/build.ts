/**
 * Builds the guest image for the emu engine (DESIGN.md §3): the Debian i386
 * kernel and an initrd holding busybox, the kernel modules of
 * kernel-modules.ts, Redis and memtester with their shared libraries and the
 * i386 loader, and /init (guest/init.sh).
 *
 * Cache layout (`<cacheDir>`, default `<repo>/.cache/guest`):
 *   vmlinuz          the kernel (bzImage) from linux-image-<release>-686
 *   initrd.img       gzip'd newc cpio, written by cpio.ts
 *   manifest.json    what the image is made from (manifest.ts); written last
 *   debs/            downloaded .debs, reused while their versions stay current
 *   build.lock       held while a build runs (contains the builder's pid)
 *
 * Rebuild rule: the manifest is computed first (apt-cache, no downloads);
 * the image is rebuilt when it differs from the stored one, when an output
 * file is missing, or when `force` is set.
 */

import { createHash } from "node:crypto";
import { copyFile, lstat, mkdir, open, readdir, readFile, readlink, realpath, rename, rm, writeFile } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { gzip } from "node:zlib";
import { GUEST_ARCH, debFileName, downloadPackages, unpackDeb } from "./apt.js";
import { CpioTree } from "./cpio.js";
import { GuestBuildError } from "./errors.js";
import { MODULE_SETS, type ModuleSetName, collectModules } from "./kernel-modules.js";
import { BUILDER_FORMAT, type GuestManifest, manifestChanges, manifestText, parseManifest, sameManifest } from "./manifest.js";
import { type GuestPackageSet, resolveGuestPackages } from "./package-set.js";
import { run } from "./run.js";
import { GUEST_LIB_DIRS, GUEST_LOADER, listSharedLibraries } from "./shared-libraries.js";

export { GuestBuildError } from "./errors.js";

export interface GuestImage {
  /** Absolute path of the kernel (bzImage). */
  kernel: string;
  /** Absolute path of the initrd (gzip'd newc cpio). */
  initrd: string;
  /** Absolute path of manifest.json. */
  manifest: string;
  /** Debian package → version the image is made from. */
  versions: Record<string, string>;
}

export interface BuildGuestOptions {
  cacheDir: string;
  /** Rebuild even when the manifest is unchanged. */
  force?: boolean;
  /** Progress lines ("guest: ..."). */
  log?: (line: string) => void;
}

const gzipAsync = promisify(gzip);
const MiB = 2 ** 20;
/** linux/Documentation/admin-guide/devices.txt: 5,1 = /dev/console (opened by the kernel before /init runs). */
const CONSOLE_MAJOR = 5;
const CONSOLE_MINOR = 1;
/** How long to wait for another process's build of the same cache before giving up. */
const LOCK_WAIT_MS = 15 * 60 * 1000;
const LOCK_POLL_MS = 1000;
/** memtester inside the initrd: where Debian's package puts it (on PATH in the guest). */
export const MEMTESTER_PATH = "usr/sbin/memtester";

/** The repository root: this file runs as <repo>/dist/guest/build.js. */
export function repoRoot(): string {
  return fileURLToPath(new URL("../..", import.meta.url));
}

/** Where callers keep the guest image unless told otherwise: `<repo>/.cache/guest`. */
export function defaultGuestCacheDir(): string {
  return join(repoRoot(), ".cache", "guest");
}

/** The init script copied into the initrd as /init (source file, not compiled). */
export function guestInitScriptPath(): string {
  return join(repoRoot(), "guest", "init.sh");
}

function sha256(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Writes through a temporary file and a rename, so readers never see half a file. */
async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, data);
  await rename(tmp, path);
}

function moduleSetText(names: readonly string[]): string {
  return names.map((n) => `${n}\n`).join("");
}

function computeManifest(pkgs: GuestPackageSet, initScript: Uint8Array): GuestManifest {
  return {
    format: BUILDER_FORMAT,
    arch: GUEST_ARCH,
    kernelRelease: pkgs.kernelRelease,
    packages: Object.fromEntries(pkgs.all.map((p) => [p.name, p.version])),
    inputs: { "init.sh": sha256(initScript), "module-sets": sha256(JSON.stringify(MODULE_SETS)) },
  };
}

async function readStoredManifest(path: string): Promise<GuestManifest | undefined> {
  try {
    return parseManifest(await readFile(path, "utf8"));
  } catch {
    return undefined;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Takes `<cacheDir>/build.lock` (O_EXCL); removes a lock whose owner is dead. Returns the release function. */
async function acquireBuildLock(cacheDir: string, log: (line: string) => void): Promise<() => Promise<void>> {
  const lockPath = join(cacheDir, "build.lock");
  const deadline = Date.now() + LOCK_WAIT_MS;
  let announced = false;
  for (;;) {
    try {
      const fh = await open(lockPath, "wx");
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      return async () => {
        await rm(lockPath, { force: true });
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    const owner = Number.parseInt(await readFile(lockPath, "utf8").catch(() => ""), 10);
    if (!Number.isInteger(owner) || !processAlive(owner)) {
      await rm(lockPath, { force: true });
      continue;
    }
    if (Date.now() > deadline) {
      throw new GuestBuildError("COMMAND_FAILED", `${lockPath} is still held by pid ${owner} after ${LOCK_WAIT_MS / 60000} min`);
    }
    if (!announced) {
      log(`guest: waiting for the build running in pid ${owner} (${lockPath})`);
      announced = true;
    }
    await new Promise((r) => setTimeout(r, LOCK_POLL_MS));
  }
}

async function requireFile(path: string, what: string): Promise<void> {
  if (!(await exists(path))) throw new GuestBuildError("FILE_MISSING", `${what}: ${path} does not exist`);
}

/** Applets as `busybox --list-full` prints them ("usr/bin/awk"), run on the host (static i386 binary). */
async function busyboxApplets(busybox: string): Promise<string[]> {
  const { stdout } = await run(busybox, ["--list-full"], {
    what: "listing busybox applets; the host must be able to run i386 binaries",
  });
  const applets = stdout.toString("utf8").split("\n").map((l) => l.trim()).filter((l) => l !== "");
  if (!applets.includes("bin/sh")) throw new GuestBuildError("FILE_MISSING", `${busybox} has no bin/sh applet`);
  return applets;
}

async function buildInitrdTree(
  pkgs: GuestPackageSet,
  manifest: GuestManifest,
  initScript: Uint8Array,
  kernelRoot: string,
  userRoot: string,
): Promise<CpioTree> {
  const tree = new CpioTree();
  for (const dir of ["dev", "proc", "sys", "run", "data", "etc", "usr/bin", "usr/sbin", "sbin"]) tree.addDirectory(dir);
  tree.addDirectory("tmp", 0o1777);
  tree.addDirectory("root", 0o700);
  tree.addCharDevice("dev/console", CONSOLE_MAJOR, CONSOLE_MINOR, 0o600);
  tree.addFile("init", initScript, 0o755);
  tree.addFile("etc/passwd", Buffer.from("root:x:0:0:root:/root:/bin/sh\n"));
  tree.addFile("etc/group", Buffer.from("root:x:0:\n"));
  tree.addFile("etc/hosts", Buffer.from("127.0.0.1\tlocalhost\n"));
  tree.addFile("etc/colo/manifest.json", Buffer.from(manifestText(manifest)));

  // busybox and its applets
  const busybox = join(userRoot, "bin", "busybox");
  await requireFile(busybox, `${pkgs.busybox.name} ${pkgs.busybox.version}`);
  tree.addFile("bin/busybox", await readFile(busybox), 0o755);
  for (const applet of await busyboxApplets(busybox)) {
    if (!tree.has(applet)) tree.addSymlink(applet, "/bin/busybox");
  }

  // kernel modules, flat, plus the load order of each set
  const modules = await collectModules(kernelRoot, pkgs.kernelRelease);
  for (const setName of Object.keys(modules) as ModuleSetName[]) {
    const list = modules[setName];
    tree.addFile(`etc/colo/modules/${setName}`, Buffer.from(moduleSetText(list.map((m) => m.name))));
    for (const m of list) if (!tree.has(`lib/modules/${m.name}.ko`)) tree.addFile(`lib/modules/${m.name}.ko`, m.data);
  }

  // Redis: redis-check-rdb is the binary, redis-server a link to it (argv[0] selects the mode)
  const rdb = join(userRoot, "usr", "bin", "redis-check-rdb");
  const cli = join(userRoot, "usr", "bin", "redis-cli");
  const serverLink = join(userRoot, "usr", "bin", "redis-server");
  await requireFile(rdb, `${pkgs.redisTools.name} ${pkgs.redisTools.version}`);
  await requireFile(cli, `${pkgs.redisTools.name} ${pkgs.redisTools.version}`);
  await requireFile(serverLink, `${pkgs.redisServer.name} ${pkgs.redisServer.version}`);
  const linkTarget = await readlink(serverLink).catch(() => "");
  if (basename(linkTarget) !== "redis-check-rdb") {
    throw new GuestBuildError("FILE_MISSING", `${serverLink} (${pkgs.redisServer.name}) is not a link to redis-check-rdb (target "${linkTarget}")`);
  }
  tree.addFile("usr/bin/redis-check-rdb", await readFile(rdb), 0o755);
  tree.addSymlink("usr/bin/redis-server", "redis-check-rdb");
  tree.addFile("usr/bin/redis-cli", await readFile(cli), 0o755);

  // memtester, where Debian puts it (for colo.memtest=SIZE)
  const memtester = join(userRoot, MEMTESTER_PATH);
  await requireFile(memtester, `${pkgs.memtester.name} ${pkgs.memtester.version}`);
  tree.addFile(MEMTESTER_PATH, await readFile(memtester), 0o755);

  // the i386 loader at its PT_INTERP path, and every library the binaries need
  tree.addFile(GUEST_LOADER, await readFile(await realpath(join(userRoot, GUEST_LOADER))), 0o755);
  const libDir = GUEST_LIB_DIRS[0] as string;
  const libs = new Map<string, string>();
  for (const binary of [rdb, cli, memtester]) {
    for (const lib of await listSharedLibraries(userRoot, binary)) libs.set(lib.soname, lib.path);
  }
  for (const [soname, path] of [...libs].sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (soname === basename(GUEST_LOADER)) continue; // libc's DT_NEEDED on the loader: already at /lib
    tree.addFile(`${libDir}/${soname}`, await readFile(await realpath(path)), 0o755);
  }
  return tree;
}

/** Removes cached .debs that are not part of the current package set. */
async function pruneDebs(debDir: string, pkgs: GuestPackageSet, log: (line: string) => void): Promise<void> {
  const keep = new Set(pkgs.all.map((p) => debFileName(p)));
  const stale = (await readdir(debDir)).filter((f) => !keep.has(f));
  for (const f of stale) await rm(join(debDir, f), { force: true, recursive: true });
  if (stale.length > 0) log(`guest: removed ${stale.length} outdated files from ${debDir}`);
}

async function build(opts: Required<BuildGuestOptions>, pkgs: GuestPackageSet, manifest: GuestManifest, initScript: Uint8Array, out: GuestImage): Promise<void> {
  const { cacheDir, log } = opts;
  const debDir = join(cacheDir, "debs");
  await mkdir(debDir, { recursive: true });
  const debs = await downloadPackages(pkgs.all, debDir, log);
  await pruneDebs(debDir, pkgs, log);

  // Leftovers of builds that died (we hold the lock: nobody else is unpacking).
  for (const f of await readdir(cacheDir)) {
    if (f.startsWith("unpacked-") || f.includes(".tmp-")) await rm(join(cacheDir, f), { recursive: true, force: true });
  }
  const workDir = join(cacheDir, `unpacked-${process.pid}`);
  const kernelRoot = join(workDir, "kernel");
  const userRoot = join(workDir, "userland");
  await mkdir(kernelRoot, { recursive: true });
  await mkdir(userRoot, { recursive: true });
  try {
    const toUnpack = [pkgs.kernelImage, pkgs.busybox, pkgs.redisServer, pkgs.redisTools, pkgs.memtester, ...pkgs.libraries];
    log(`guest: unpacking ${toUnpack.length} packages`);
    for (const pkg of toUnpack) {
      const deb = debs.get(pkg.name);
      if (deb === undefined) throw new GuestBuildError("DOWNLOAD_FAILED", `no .deb for ${pkg.name} ${pkg.version}`);
      await unpackDeb(deb, pkg === pkgs.kernelImage ? kernelRoot : userRoot);
    }

    const vmlinuz = join(kernelRoot, "boot", `vmlinuz-${pkgs.kernelRelease}`);
    await requireFile(vmlinuz, `${pkgs.kernelImage.name} ${pkgs.kernelImage.version}`);
    const kernelTmp = `${out.kernel}.tmp-${process.pid}`;
    await copyFile(vmlinuz, kernelTmp);
    await rename(kernelTmp, out.kernel);
    log(`guest: kernel ${pkgs.kernelRelease} (${pkgs.kernelImage.name} ${pkgs.kernelImage.version})`);

    const tree = await buildInitrdTree(pkgs, manifest, initScript, kernelRoot, userRoot);
    const cpio = tree.encode();
    const compressed = await gzipAsync(cpio, { level: 9 });
    await writeFileAtomic(out.initrd, compressed);
    log(
      `guest: wrote initrd ${(compressed.length / MiB).toFixed(1)} MiB ` +
        `(${(cpio.length / MiB).toFixed(1)} MiB uncompressed, ${tree.entries().length} entries)`,
    );
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
  // Last: a manifest on disk means the outputs beside it are complete.
  await writeFileAtomic(out.manifest, manifestText(manifest));
}

/**
 * Returns the cached guest image, building it first if its inputs changed.
 * Resolves versions with apt-cache, downloads with apt-get, unpacks with
 * dpkg-deb; all asynchronous.
 */
export async function buildGuestImage(opts: BuildGuestOptions): Promise<GuestImage> {
  const log = opts.log ?? ((): void => {});
  const cacheDir = resolve(opts.cacheDir);
  const out: GuestImage = {
    kernel: join(cacheDir, "vmlinuz"),
    initrd: join(cacheDir, "initrd.img"),
    manifest: join(cacheDir, "manifest.json"),
    versions: {},
  };

  log("guest: resolving package versions");
  const previous = await readStoredManifest(out.manifest);
  const pkgs = await resolveGuestPackages(previous === undefined ? [] : Object.keys(previous.packages));
  const initPath = guestInitScriptPath();
  const initScript = await readFile(initPath).catch((e: unknown) => {
    throw new GuestBuildError("FILE_MISSING", `init script ${initPath} is unreadable`, { cause: e });
  });
  const manifest = computeManifest(pkgs, initScript);
  out.versions = { ...manifest.packages };

  const upToDate = async (explain: boolean): Promise<boolean> => {
    const stored = await readStoredManifest(out.manifest);
    if (stored === undefined || !sameManifest(stored, manifest)) {
      if (explain) {
        log(stored === undefined ? `guest: no valid manifest in ${cacheDir}, building` : `guest: inputs changed: ${manifestChanges(stored, manifest).join("; ")}`);
      }
      return false;
    }
    return (await exists(out.kernel)) && (await exists(out.initrd));
  };

  if (opts.force !== true && (await upToDate(true))) {
    log(`guest: up to date (kernel ${manifest.kernelRelease}, ${Object.keys(manifest.packages).length} packages) in ${cacheDir}`);
    return out;
  }

  await mkdir(cacheDir, { recursive: true });
  const release = await acquireBuildLock(cacheDir, log);
  try {
    // Another process may have built it while we waited for the lock.
    if (opts.force !== true && (await upToDate(false))) {
      log(`guest: up to date in ${cacheDir} (built by another process)`);
      return out;
    }
    await build({ cacheDir, force: opts.force === true, log }, pkgs, manifest, initScript, out);
  } finally {
    await release();
  }
  log(`guest: done (${cacheDir})`);
  return out;
}
