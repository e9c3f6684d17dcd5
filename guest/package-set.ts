/**
 * Which Debian packages make a guest, resolved to exact versions of the
 * target's architecture at build time (DESIGN.md §3):
 *
 * - the kernel: the target's metapackage (`linux-image-686`,
 *   `linux-image-amd64`) names the current `linux-image-<release>-<flavour>`
 *   (for i386 never -686-pae: v86 has no PAE);
 * - `busybox-static`: shell, init tools, insmod, ip, mount;
 * - `redis-tools` (holds the real binary, redis-check-rdb) and
 *   `redis-server` (holds the redis-server → redis-check-rdb link);
 * - `memtester` (/usr/sbin/memtester, for the memory-integrity run mode,
 *   `colo.memtest=SIZE`; needs only libc);
 * - the shared libraries those binaries need: the closure of the library
 *   dependencies of redis-tools and memtester (first alternative of each,
 *   `lib*` packages only), plus libc6 (the loader) and libstdc++6 (linked
 *   by jemalloc, not declared). The build checks the set against the ELF
 *   files afterwards, for every binary it copies (shared-libraries.ts).
 */

import { type AptPackage, showPackages } from "./apt.js";
import { GuestBuildError } from "./errors.js";
import type { GuestTarget } from "./target.js";

export const BUSYBOX_PACKAGE = "busybox-static";
export const REDIS_SERVER_PACKAGE = "redis-server";
export const REDIS_TOOLS_PACKAGE = "redis-tools";
export const MEMTESTER_PACKAGE = "memtester";
/** Libraries always taken, whatever the dependency fields say. */
const EXTRA_LIBRARY_PACKAGES = ["libc6", "libstdc++6"];
/** Library closure guard: more than this means the lib* walk went somewhere unexpected. */
const MAX_LIBRARY_PACKAGES = 40;

export interface GuestPackageSet {
  kernelImage: AptPackage;
  /** `uname -r` of the guest kernel, e.g. "6.1.0-50-686", "6.1.0-57-amd64". */
  kernelRelease: string;
  busybox: AptPackage;
  redisServer: AptPackage;
  redisTools: AptPackage;
  memtester: AptPackage;
  libraries: AptPackage[];
  /** Every package to download (the metapackage included, for the record), sorted by name. */
  all: AptPackage[];
}

function libraryDependencies(pkg: AptPackage): string[] {
  const out: string[] = [];
  for (const alternatives of pkg.depends) {
    const first = alternatives[0];
    if (first !== undefined && first.startsWith("lib")) out.push(first);
  }
  return out;
}

/** apt-cache lookup as `showPackages` does it (architecture, required names, optional names); replaceable in tests. */
export type PackageLookup = (arch: string, names: readonly string[], optional: readonly string[]) => Promise<Map<string, AptPackage>>;

/**
 * Resolves the package set of `target`, every package of its architecture.
 * `hints` (typically the packages of the stored manifest) are asked for in
 * the first apt-cache call, so an unchanged set resolves in one call
 * instead of one per dependency level; unknown hints are ignored. `lookup`
 * is `showPackages` (apt-cache) unless a test replaces it.
 */
export async function resolveGuestPackages(target: GuestTarget, hints: readonly string[] = [], lookup: PackageLookup = showPackages): Promise<GuestPackageSet> {
  const { metapackage, imagePattern, flavour } = target.kernel;
  const known = new Map<string, AptPackage>();
  const ensure = async (required: readonly string[], optional: readonly string[] = []): Promise<void> => {
    const need = required.filter((n) => !known.has(n));
    if (need.length === 0) return;
    const extra = optional.filter((n) => !known.has(n) && !need.includes(n));
    for (const [name, pkg] of await lookup(target.arch, need, extra)) known.set(name, pkg);
  };
  const get = (name: string): AptPackage => {
    const p = known.get(name);
    if (p === undefined) throw new GuestBuildError("RESOLVE_FAILED", `package ${name} was not resolved`);
    return p;
  };

  await ensure([metapackage, BUSYBOX_PACKAGE, REDIS_SERVER_PACKAGE, REDIS_TOOLS_PACKAGE, MEMTESTER_PACKAGE, ...EXTRA_LIBRARY_PACKAGES], hints);
  const meta = get(metapackage);
  const redisTools = get(REDIS_TOOLS_PACKAGE);
  const memtester = get(MEMTESTER_PACKAGE);

  let kernelImageName: string | undefined;
  let kernelRelease: string | undefined;
  for (const alternatives of meta.depends) {
    for (const alt of alternatives) {
      const m = imagePattern.exec(alt);
      if (m !== null && m[1] !== undefined) {
        kernelImageName = alt;
        kernelRelease = m[1];
      }
    }
  }
  if (kernelImageName === undefined || kernelRelease === undefined) {
    const deps = meta.depends.map((a) => a.join(" | ")).join(", ");
    throw new GuestBuildError("RESOLVE_FAILED", `${metapackage}:${target.arch} ${meta.version} depends on no linux-image-<release>-${flavour} package (depends: ${deps})`);
  }

  // Library closure, breadth first; each level is one apt-cache call (none when hinted).
  const libraries = new Map<string, AptPackage>();
  let frontier = [...new Set([...EXTRA_LIBRARY_PACKAGES, ...libraryDependencies(redisTools), ...libraryDependencies(memtester)])];
  let first = true;
  while (frontier.length > 0) {
    await ensure(first ? [...frontier, kernelImageName] : frontier);
    first = false;
    const next = new Set<string>();
    for (const name of frontier) {
      const pkg = get(name);
      libraries.set(name, pkg);
      for (const dep of libraryDependencies(pkg)) if (!libraries.has(dep)) next.add(dep);
    }
    if (libraries.size + next.size > MAX_LIBRARY_PACKAGES) {
      throw new GuestBuildError(
        "RESOLVE_FAILED",
        `the library closure of ${REDIS_TOOLS_PACKAGE} and ${MEMTESTER_PACKAGE} exceeds ${MAX_LIBRARY_PACKAGES} packages: ${[...libraries.keys(), ...next].join(", ")}`,
      );
    }
    frontier = [...next];
  }
  const kernelImage = get(kernelImageName);

  const byName = (a: AptPackage, b: AptPackage): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  const busybox = get(BUSYBOX_PACKAGE);
  const redisServer = get(REDIS_SERVER_PACKAGE);
  const all = [meta, kernelImage, busybox, redisServer, redisTools, memtester, ...libraries.values()].sort(byName);
  return { kernelImage, kernelRelease, busybox, redisServer, redisTools, memtester, libraries: [...libraries.values()].sort(byName), all };
}
