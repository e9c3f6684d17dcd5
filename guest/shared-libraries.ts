/**
 * Finds the shared libraries a guest binary needs by asking the guest's own
 * i386 dynamic loader, run on the host from the unpacked libc6:
 *   ld-linux.so.2 --library-path DIRS --list BINARY
 * (glibc's rtld `--list`, the engine behind ldd). The host kernel must be
 * able to run i386 code (IA32 emulation, standard in Debian amd64 kernels).
 */

import { realpath } from "node:fs/promises";
import { join, relative, isAbsolute } from "node:path";
import { GuestBuildError } from "./errors.js";
import { run } from "./run.js";

/** Where Debian's i386 libc6 keeps the loader and libraries (multiarch tuple i386-linux-gnu). */
export const GUEST_LIB_DIRS = ["lib/i386-linux-gnu", "usr/lib/i386-linux-gnu"];
/** The PT_INTERP of every i386 Debian binary. */
export const GUEST_LOADER = "lib/ld-linux.so.2";

export interface LoaderListEntry {
  /** The name the binary asks for (DT_NEEDED), e.g. "libssl.so.3". */
  soname: string;
  /** Where the loader found it, or null when "not found". */
  path: string | null;
}

/**
 * Parses `--list` output. Skips the vDSO (no "=>", no path) and the
 * interpreter line (its name is absolute).
 */
export function parseLoaderList(output: string): LoaderListEntry[] {
  const out: LoaderListEntry[] = [];
  for (const raw of output.split("\n")) {
    const line = raw.trim();
    if (line === "") continue;
    const arrow = line.indexOf(" => ");
    if (arrow < 0) continue; // "linux-gate.so.1 (0x...)" or "/lib/ld-linux.so.2 (0x...)"
    const soname = line.slice(0, arrow).trim();
    if (soname.startsWith("/")) continue;
    const rest = line.slice(arrow + 4).trim();
    if (rest.startsWith("not found")) {
      out.push({ soname, path: null });
      continue;
    }
    const path = rest.replace(/\s*\(0x[0-9a-fA-F]+\)$/, "").trim();
    out.push({ soname, path: path === "" ? null : path });
  }
  return out;
}

/**
 * The libraries `binary` (a path inside `root`) needs, each found inside
 * `root`. Fails naming the binary and every missing library.
 */
export async function listSharedLibraries(root: string, binary: string): Promise<Array<{ soname: string; path: string }>> {
  const loader = await realpath(join(root, GUEST_LOADER)).catch((e: unknown) => {
    throw new GuestBuildError("FILE_MISSING", `the i386 loader ${join(root, GUEST_LOADER)} is missing (libc6 not unpacked?)`, { cause: e });
  });
  const libraryPath = GUEST_LIB_DIRS.map((d) => join(root, d)).join(":");
  const { stdout } = await run(loader, ["--library-path", libraryPath, "--list", binary], {
    failCode: "LIBRARY_MISSING",
    what: `listing the shared libraries of ${binary}; a missing library means a package is missing from the set, ENOEXEC means the host cannot run i386 code`,
  });
  const entries = parseLoaderList(stdout.toString("utf8"));
  const missing = entries.filter((e) => e.path === null).map((e) => e.soname);
  if (missing.length > 0) {
    throw new GuestBuildError("LIBRARY_MISSING", `${binary} needs ${missing.join(", ")}, found in no unpacked package`);
  }
  const found: Array<{ soname: string; path: string }> = [];
  for (const e of entries) {
    if (e.path === null) continue;
    const rel = relative(root, e.path);
    if (rel.startsWith("..") || isAbsolute(rel)) {
      throw new GuestBuildError("LIBRARY_MISSING", `${binary}: ${e.soname} resolved to the host's ${e.path}, not to an unpacked guest package`);
    }
    found.push({ soname: e.soname, path: e.path });
  }
  return found;
}
