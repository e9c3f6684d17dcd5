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
import { copyFile, lstat, mkdir, open, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { gzip } from "node:zlib";
import { GUEST_ARCH, debFileName, downloadPackages, unpackDeb } from "./apt.js";
import { GuestBuildError } from "./errors.js";
import { buildInitrdTree } from "./initrd-tree.js";
import { MODULE_SETS } from "./kernel-modules.js";
import { BUILDER_FORMAT, type GuestManifest, manifestChanges, manifestText, parseManifest, sameManifest } from "./manifest.js";
import { type GuestPackageSet, resolveGuestPackages } from "./package-set.js";
import { forbidExecutionUnder } from "./run.js";

export { GuestBuildError } from "./errors.js";
export { MEMTESTER_PATH } from "./initrd-tree.js";

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
/** How long to wait for another process's build of the same cache before giving up. */
const LOCK_WAIT_MS = 15 * 60 * 1000;
const LOCK_POLL_MS = 1000;
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

    const tree = await buildInitrdTree({ pkgs, manifest, initScript, kernelRoot, userRoot });
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
