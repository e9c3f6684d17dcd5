/**
 * Finds the shared libraries a guest binary needs by reading ELF files, the
 * way the dynamic loader would resolve them, without running anything: the
 * closure over DT_NEEDED, each name looked up in the binary's DT_RUNPATH
 * (or DT_RPATH) and then in the guest's library directories, every path
 * resolved inside the unpacked guest tree (symlinks included, absolute ones
 * relative to the tree's root), never on the host.
 */

import { lstat, readFile, readlink } from "node:fs/promises";
import { basename, dirname, join, posix } from "node:path";
import { ElfFile } from "./elf.js";
import { GuestBuildError } from "./errors.js";

/** Where a guest architecture's loader and libraries live (Debian multiarch). */
export interface GuestAbi {
  /** Debian architecture ("i386"). */
  arch: string;
  /** ELF e_machine every binary and library must have (gABI). */
  machine: number;
  /** Library directories the loader searches, relative to the root, in order. */
  libDirs: readonly string[];
}

/** One library of the closure. */
export interface SharedLibrary {
  /** The name a binary asks for (DT_NEEDED), e.g. "libssl.so.3". */
  soname: string;
  /** Where it lies in the guest tree, relative to the root, after following symlinks. */
  path: string;
}

export interface BinaryNeeds {
  /** PT_INTERP, absolute in the guest ("/lib/ld-linux.so.2"), or undefined for a static binary. */
  interpreter: string | undefined;
  /** Every library of the closure, sorted by soname. */
  libraries: SharedLibrary[];
}

const MAX_SYMLINK_HOPS = 40; // the kernel's own limit (fs/namei.c MAXSYMLINKS)

/**
 * Resolves `relPath` inside `root` as if `root` were `/`: symlinks are
 * followed, an absolute target restarts at `root`, ".." stops at `root`.
 * Returns the resolved path relative to root, or undefined if it does not exist.
 */
export async function resolveInTree(root: string, relPath: string): Promise<string | undefined> {
  let pending = posix.normalize(relPath).split("/").filter((p) => p !== "" && p !== ".");
  const done: string[] = [];
  let hops = 0;
  while (pending.length > 0) {
    const part = pending.shift() as string;
    if (part === "..") {
      done.pop();
      continue;
    }
    const candidate = [...done, part];
    const full = join(root, ...candidate);
    let isLink: boolean;
    try {
      isLink = (await lstat(full)).isSymbolicLink();
    } catch {
      return undefined;
    }
    if (!isLink) {
      done.push(part);
      continue;
    }
    if (++hops > MAX_SYMLINK_HOPS) throw new GuestBuildError("LIBRARY_MISSING", `${join(root, ...candidate)}: more than ${MAX_SYMLINK_HOPS} symbolic links`);
    const target = await readlink(full);
    const targetParts = target.split("/").filter((p) => p !== "" && p !== ".");
    if (target.startsWith("/")) done.length = 0;
    pending = [...targetParts, ...pending];
  }
  return done.join("/");
}

async function readElf(root: string, rel: string, what: string, abi: GuestAbi): Promise<ElfFile> {
  const bytes = await readFile(join(root, rel)).catch((e: unknown) => {
    throw new GuestBuildError("FILE_MISSING", `${what}: ${join(root, rel)} is unreadable`, { cause: e });
  });
  const elf = new ElfFile(bytes, `${what} (${rel})`);
  if (elf.machine !== abi.machine) throw elf.fail(`ELF machine ${elf.machine}, the ${abi.arch} guest needs ${abi.machine}`);
  return elf;
}

/**
 * What `binary` (a path relative to `root`) needs to run in the guest: its
 * loader and the closure of its libraries, each found inside `root`. Fails
 * naming the binary, the missing library and the chain that needs it.
 */
export async function sharedLibraryClosure(root: string, binary: string, abi: GuestAbi): Promise<BinaryNeeds> {
  const top = await readElf(root, binary, binary, abi);
  const interpreter = top.interpreter();
  const interpName = interpreter === undefined ? undefined : basename(interpreter);
  const found = new Map<string, SharedLibrary>();
  // Breadth first, like the loader: the binary's own needs, then theirs.
  const queue: Array<{ elf: ElfFile; rel: string; chain: readonly string[] }> = [{ elf: top, rel: binary, chain: [binary] }];
  while (queue.length > 0) {
    const { elf, rel, chain } = queue.shift() as { elf: ElfFile; rel: string; chain: readonly string[] };
    const dyn = elf.dynamic();
    if (dyn === undefined) continue;
    // $ORIGIN is the directory of the object that carries the search path.
    const own = dyn.searchPath.map((d) => d.replace(/\$\{?ORIGIN\}?/g, `/${dirname(rel)}`));
    for (const soname of dyn.needed) {
      if (found.has(soname) || soname === interpName) continue; // libc's DT_NEEDED on the loader: the interpreter itself
      let path: string | undefined;
      if (soname.includes("/")) path = await resolveInTree(root, soname);
      for (const dir of soname.includes("/") ? [] : [...own, ...abi.libDirs]) {
        path = await resolveInTree(root, posix.join(dir, soname));
        if (path !== undefined) break;
      }
      if (path === undefined) {
        throw new GuestBuildError(
          "LIBRARY_MISSING",
          `${chain.join(" -> ")} needs ${soname}, found in no unpacked package (searched ${[...own, ...abi.libDirs].join(", ")})`,
        );
      }
      const lib: SharedLibrary = { soname, path };
      found.set(soname, lib);
      queue.push({ elf: await readElf(root, path, soname, abi), rel: path, chain: [...chain, soname] });
    }
  }
  return { interpreter, libraries: [...found.values()].sort((a, b) => (a.soname < b.soname ? -1 : a.soname > b.soname ? 1 : 0)) };
}
