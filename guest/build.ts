/**
 * Builds a guest image (DESIGN.md §3) for one target (target.ts): the
 * emu engine's i386 guest or the qemu engine's x86-64 guest, each from
 * Debian bookworm packages of its architecture: the kernel and an initrd
 * holding busybox, the target's kernel modules (kernel-modules.ts), Redis
 * and memtester with their shared libraries and the loader, and /init
 * (guest/init.sh).
 *
 * Cache layout (`<cacheDir>`, default `<repo>/.cache/guest` for i386,
 * `<repo>/.cache/guest-amd64` for amd64):
 *   vmlinuz          the kernel (bzImage) from linux-image-<release>-<flavour>
 *   vmlinux          pvh-vmlinux targets (amd64): the ELF kernel inside it, booted through its PVH entry (vmlinux.ts)
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
import { copyFile, lstat, mkdir, open, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { gzip } from "node:zlib";
import { debFileName, downloadPackages, unpackDeb } from "./apt.js";
import { GuestBuildError } from "./errors.js";
import { buildInitrdTree } from "./initrd-tree.js";
import { BUILDER_FORMAT, type GuestManifest, manifestChanges, manifestText, parseManifest, sameManifest } from "./manifest.js";
import { type GuestPackageSet, resolveGuestPackages } from "./package-set.js";
import { forbidExecutionUnder } from "./run.js";
import { type GuestArch, type GuestTarget, I386_TARGET, guestTarget } from "./target.js";
import { extractPvhVmlinux } from "./vmlinux.js";

export { GuestBuildError } from "./errors.js";
export { MEMTESTER_PATH } from "./initrd-tree.js";

/** Where a target's image lies in its cache directory (guestImagePaths()). */
export interface GuestImagePaths {
  arch: GuestArch;
  /** Absolute path of the kernel as Debian ships it (bzImage). */
  kernel: string;
  /** Absolute path of the ELF vmlinux for a pvh-vmlinux target (amd64); undefined for a bzImage target (i386). */
  vmlinux: string | undefined;
  /** The kernel the target's engine boots: `vmlinux` when there is one, else `kernel`. */
  bootKernel: string;
  /** Absolute path of the initrd (gzip'd newc cpio). */
  initrd: string;
  /** Absolute path of manifest.json. */
  manifest: string;
}

export interface GuestImage extends GuestImagePaths {
  /** Debian package → version the image is made from. */
  versions: Record<string, string>;
}

export interface BuildGuestOptions {
  /** Which guest (default i386, the emu engine's). */
  target?: GuestTarget;
  /** Default: defaultGuestCacheDir(target). */
  cacheDir?: string;
  /** Rebuild even when the manifest is unchanged. */
  force?: boolean;
  /** Progress lines ("guest: ..."). */
  log?: (line: string) => void;
}

const gzipAsync = promisify(gzip);
const MiB = 2 ** 20;
/** How long to wait for another process's build of the same cache before giving up. */
const LOCK_WAIT_MS = 15 * 60 * 1000;
const LOCK_POLL_MS = 1000;
/** The repository root: this file runs as <repo>/dist/guest/build.js. */
export function repoRoot(): string {
  return fileURLToPath(new URL("../..", import.meta.url));
}

function targetOf(target: GuestTarget | GuestArch): GuestTarget {
  return typeof target === "string" ? guestTarget(target) : target;
}

/** Where callers keep a target's image unless told otherwise: `<repo>/.cache/guest` (i386), `<repo>/.cache/guest-amd64` (amd64). */
export function defaultGuestCacheDir(target: GuestTarget | GuestArch = I386_TARGET): string {
  return join(repoRoot(), ".cache", targetOf(target).cacheDirName);
}

/**
 * The files of a target's image in `cacheDir` (default its default cache),
 * whether built or not: the qemu engine boots `guestImagePaths("amd64")
 * .vmlinux` (= `.bootKernel`) with `.initrd`.
 */
export function guestImagePaths(target: GuestTarget | GuestArch = I386_TARGET, cacheDir?: string): GuestImagePaths {
  const t = targetOf(target);
  const dir = resolve(cacheDir ?? defaultGuestCacheDir(t));
  const kernel = join(dir, "vmlinuz");
  const vmlinux = t.kernel.form === "pvh-vmlinux" ? join(dir, "vmlinux") : undefined;
  return { arch: t.arch, kernel, vmlinux, bootKernel: vmlinux ?? kernel, initrd: join(dir, "initrd.img"), manifest: join(dir, "manifest.json") };
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

function computeManifest(target: GuestTarget, pkgs: GuestPackageSet, initScript: Uint8Array): GuestManifest {
  return {
    format: BUILDER_FORMAT,
    arch: target.arch,
    kernelRelease: pkgs.kernelRelease,
    packages: Object.fromEntries(pkgs.all.map((p) => [p.name, p.version])),
    inputs: { "init.sh": sha256(initScript), "module-sets": sha256(JSON.stringify(target.moduleSets)) },
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

/** Removes cached .debs that are not part of the current package set. */
async function pruneDebs(debDir: string, pkgs: GuestPackageSet, log: (line: string) => void): Promise<void> {
  const keep = new Set(pkgs.all.map((p) => debFileName(p)));
  const stale = (await readdir(debDir)).filter((f) => !keep.has(f));
  for (const f of stale) await rm(join(debDir, f), { force: true, recursive: true });
  if (stale.length > 0) log(`guest: removed ${stale.length} outdated files from ${debDir}`);
}

interface BuildJob {
  target: GuestTarget;
  cacheDir: string;
  log: (line: string) => void;
}

async function build(job: BuildJob, pkgs: GuestPackageSet, manifest: GuestManifest, initScript: Uint8Array, out: GuestImage): Promise<void> {
  const { target, cacheDir, log } = job;
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
  // Guest code never runs here: the build reads the unpacked files only (docs/guest.md).
  const allowExecution = forbidExecutionUnder(workDir);
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
    if (out.vmlinux !== undefined) {
      const what = `${pkgs.kernelImage.name} ${pkgs.kernelImage.version} boot/vmlinuz-${pkgs.kernelRelease}`;
      const pvh = await extractPvhVmlinux(await readFile(vmlinuz), what);
      await writeFileAtomic(out.vmlinux, pvh.vmlinux);
      log(`guest: vmlinux ${(pvh.vmlinux.length / MiB).toFixed(1)} MiB from the bzImage's xz payload (boot protocol ${pvh.protocol}), PVH entry 0x${pvh.entry.toString(16)}`);
    }

    const tree = await buildInitrdTree({ pkgs, manifest, initScript, kernelRoot, userRoot, target });
    const cpio = tree.encode();
    const compressed = await gzipAsync(cpio, { level: 9 });
    await writeFileAtomic(out.initrd, compressed);
    log(
      `guest: wrote initrd ${(compressed.length / MiB).toFixed(1)} MiB ` +
        `(${(cpio.length / MiB).toFixed(1)} MiB uncompressed, ${tree.entries().length} entries)`,
    );
  } finally {
    allowExecution();
    await rm(workDir, { recursive: true, force: true });
  }
  // Last: a manifest on disk means the outputs beside it are complete.
  await writeFileAtomic(out.manifest, manifestText(manifest));
}

/**
 * Returns the cached image of `opts.target` (default i386), building it
 * first if its inputs changed. Resolves versions with apt-cache, downloads
 * with apt-get, unpacks with dpkg-deb; all asynchronous.
 */
export async function buildGuestImage(opts: BuildGuestOptions = {}): Promise<GuestImage> {
  const log = opts.log ?? ((): void => {});
  const target = opts.target ?? I386_TARGET;
  const cacheDir = resolve(opts.cacheDir ?? defaultGuestCacheDir(target));
  const out: GuestImage = { ...guestImagePaths(target, cacheDir), versions: {} };

  log(`guest: resolving ${target.arch} package versions`);
  const previous = await readStoredManifest(out.manifest);
  const pkgs = await resolveGuestPackages(target, previous === undefined ? [] : Object.keys(previous.packages));
  const initPath = guestInitScriptPath();
  const initScript = await readFile(initPath).catch((e: unknown) => {
    throw new GuestBuildError("FILE_MISSING", `init script ${initPath} is unreadable`, { cause: e });
  });
  const manifest = computeManifest(target, pkgs, initScript);
  out.versions = { ...manifest.packages };

  const upToDate = async (explain: boolean): Promise<boolean> => {
    const stored = await readStoredManifest(out.manifest);
    if (stored === undefined || !sameManifest(stored, manifest)) {
      if (explain) {
        log(stored === undefined ? `guest: no valid manifest in ${cacheDir}, building` : `guest: inputs changed: ${manifestChanges(stored, manifest).join("; ")}`);
      }
      return false;
    }
    for (const f of [out.kernel, out.vmlinux, out.initrd]) if (f !== undefined && !(await exists(f))) return false;
    return true;
  };

  if (opts.force !== true && (await upToDate(true))) {
    log(`guest: up to date (${target.arch}, kernel ${manifest.kernelRelease}, ${Object.keys(manifest.packages).length} packages) in ${cacheDir}`);
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
    await build({ target, cacheDir, log }, pkgs, manifest, initScript, out);
  } finally {
    await release();
  }
  log(`guest: done (${cacheDir})`);
  return out;
}
