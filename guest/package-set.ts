/**
 * Which Debian packages make the guest, resolved to exact versions at build
 * time (DESIGN.md §3):
 *
 * - the kernel: the `linux-image-686` metapackage names the current
 *   `linux-image-<release>-686` (never -686-pae: v86 has no PAE);
 * - `busybox-static`: shell, init tools, insmod, ip, mount;
 * - `redis-tools` (holds the real binary, redis-check-rdb) and
 *   `redis-server` (holds the redis-server → redis-check-rdb link);
 * - the shared libraries redis needs: the closure of redis-tools' library
 *   dependencies (first alternative of each, `lib*` packages only), plus
 *   libc6 (the loader) and libstdc++6 (linked by jemalloc, not declared).
 *   The build checks the set with the i386 loader afterwards.
 */

import { type AptPackage, showPackages } from "./apt.js";
import { GuestBuildError } from "./errors.js";

export const KERNEL_METAPACKAGE = "linux-image-686";
/** `linux-image-6.1.0-50-686` → release `6.1.0-50-686`; "-686-pae" does not match. */
const KERNEL_IMAGE_PATTERN = /^linux-image-(\d+\.\d+\.\d+-\d+-686)$/;
export const BUSYBOX_PACKAGE = "busybox-static";
export const REDIS_SERVER_PACKAGE = "redis-server";
export const REDIS_TOOLS_PACKAGE = "redis-tools";
/** Libraries always taken, whatever the dependency fields say. */
const EXTRA_LIBRARY_PACKAGES = ["libc6", "libstdc++6"];
/** Library closure guard: more than this means the lib* walk went somewhere unexpected. */
const MAX_LIBRARY_PACKAGES = 40;

export interface GuestPackageSet {
  kernelImage: AptPackage;
  /** `uname -r` of the guest kernel, e.g. "6.1.0-50-686". */
  kernelRelease: string;
  busybox: AptPackage;
  redisServer: AptPackage;
  redisTools: AptPackage;
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

export async function resolveGuestPackages(): Promise<GuestPackageSet> {
  const top = await showPackages([KERNEL_METAPACKAGE, BUSYBOX_PACKAGE, REDIS_SERVER_PACKAGE, REDIS_TOOLS_PACKAGE]);
  const get = (m: Map<string, AptPackage>, name: string): AptPackage => {
    const p = m.get(name);
    if (p === undefined) throw new GuestBuildError("RESOLVE_FAILED", `package ${name} was not resolved`);
    return p;
  };
  const meta = get(top, KERNEL_METAPACKAGE);
  const redisTools = get(top, REDIS_TOOLS_PACKAGE);

  let kernelImageName: string | undefined;
  let kernelRelease: string | undefined;
  for (const alternatives of meta.depends) {
    for (const alt of alternatives) {
      const m = KERNEL_IMAGE_PATTERN.exec(alt);
      if (m !== null && m[1] !== undefined) {
        kernelImageName = alt;
        kernelRelease = m[1];
      }
    }
  }
  if (kernelImageName === undefined || kernelRelease === undefined) {
    const deps = meta.depends.map((a) => a.join(" | ")).join(", ");
    throw new GuestBuildError("RESOLVE_FAILED", `${KERNEL_METAPACKAGE} ${meta.version} depends on no linux-image-<release>-686 package (depends: ${deps})`);
  }

  const libraries = new Map<string, AptPackage>();
  let frontier = [...new Set([...EXTRA_LIBRARY_PACKAGES, ...libraryDependencies(redisTools)])];
  let kernelImage: AptPackage | undefined;
  while (frontier.length > 0) {
    const names = kernelImage === undefined ? [...frontier, kernelImageName] : frontier;
    const shown = await showPackages(names);
    kernelImage ??= get(shown, kernelImageName);
    const next = new Set<string>();
    for (const name of frontier) {
      const pkg = get(shown, name);
      libraries.set(name, pkg);
      for (const dep of libraryDependencies(pkg)) if (!libraries.has(dep)) next.add(dep);
    }
    if (libraries.size + next.size > MAX_LIBRARY_PACKAGES) {
      throw new GuestBuildError("RESOLVE_FAILED", `the library closure of ${REDIS_TOOLS_PACKAGE} exceeds ${MAX_LIBRARY_PACKAGES} packages: ${[...libraries.keys(), ...next].join(", ")}`);
    }
    frontier = [...next];
  }
  if (kernelImage === undefined) throw new GuestBuildError("RESOLVE_FAILED", `package ${kernelImageName} was not resolved`);

  const all = [meta, kernelImage, get(top, BUSYBOX_PACKAGE), get(top, REDIS_SERVER_PACKAGE), redisTools, ...libraries.values()];
  all.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return {
    kernelImage,
    kernelRelease,
    busybox: get(top, BUSYBOX_PACKAGE),
    redisServer: get(top, REDIS_SERVER_PACKAGE),
    redisTools,
    libraries: [...libraries.values()].sort((a, b) => (a.name < b.name ? -1 : 1)),
    all,
  };
}
