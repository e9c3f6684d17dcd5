/**
 * The Debian package tools the builder drives: `apt-cache show` to resolve
 * candidate versions and dependencies, `apt-get download` to fetch .debs,
 * `dpkg-deb` to check and unpack them. Control-file parsing is pure and
 * unit-tested; the rest shells out asynchronously.
 *
 * Control file syntax: Debian Policy §5.1 (fields, continuation lines) and
 * §7.1 (dependency fields: "," separates, "|" gives alternatives, "(op ver)"
 * restricts the version, ":arch" qualifies the architecture).
 */

import { createHash } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { GuestBuildError } from "./errors.js";
import { run } from "./run.js";

export interface AptPackage {
  name: string;
  version: string;
  architecture: string;
  /** Depends and Pre-Depends; each inner list holds the alternatives, in order. */
  depends: string[][];
  /** SHA256 of the .deb as the archive lists it, when known. */
  sha256: string | undefined;
}

/** Splits control text into stanzas of field → value (continuation lines joined with "\n"). */
export function parseControlStanzas(text: string): Array<Map<string, string>> {
  const stanzas: Array<Map<string, string>> = [];
  let current = new Map<string, string>();
  let lastField: string | undefined;
  for (const line of text.split("\n")) {
    if (line.trim() === "") {
      if (current.size > 0) stanzas.push(current);
      current = new Map();
      lastField = undefined;
      continue;
    }
    if (line.startsWith(" ") || line.startsWith("\t")) {
      if (lastField !== undefined) current.set(lastField, `${current.get(lastField) ?? ""}\n${line.trim()}`);
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    lastField = line.slice(0, colon);
    current.set(lastField, line.slice(colon + 1).trim());
  }
  if (current.size > 0) stanzas.push(current);
  return stanzas;
}

/** "libc6 (>= 2.34), libsystemd0 | libelogind0:any" → [["libc6"], ["libsystemd0", "libelogind0"]]. */
export function parseDependsField(value: string): string[][] {
  const out: string[][] = [];
  for (const group of value.split(",")) {
    const alternatives = group
      .split("|")
      .map((alt) => alt.replace(/\(.*?\)/g, "").replace(/\[.*?\]/g, "").replace(/<.*?>/g, "").trim())
      .map((alt) => alt.split(":")[0]?.trim() ?? "")
      .filter((alt) => alt !== "");
    if (alternatives.length > 0) out.push(alternatives);
  }
  return out;
}

function stanzaToPackage(s: Map<string, string>): AptPackage | undefined {
  const name = s.get("Package");
  const version = s.get("Version");
  const architecture = s.get("Architecture");
  if (name === undefined || version === undefined || architecture === undefined) return undefined;
  const depends = [...parseDependsField(s.get("Pre-Depends") ?? ""), ...parseDependsField(s.get("Depends") ?? "")];
  return { name, version, architecture, depends, sha256: s.get("SHA256") };
}

/**
 * Candidate versions of `names` for Debian architecture `arch` (the
 * target's: `apt-cache show NAME:ARCH`), one apt-cache call for all of them
 * (each call costs ~1 s where apt keeps no binary cache). Fails naming
 * every package apt does not know, except those listed in `optional`, which
 * are simply left out of the result, and any stanza of another architecture.
 */
export async function showPackages(arch: string, names: readonly string[], optional: readonly string[] = []): Promise<Map<string, AptPackage>> {
  const result = new Map<string, AptPackage>();
  const all = [...new Set([...names, ...optional])];
  if (all.length === 0) return result;
  const { stdout } = await run("apt-cache", ["show", "--no-all-versions", ...all.map((n) => `${n}:${arch}`)], {
    failCode: "RESOLVE_FAILED",
    what: `resolving ${names.join(", ")}; is the ${arch} architecture added and apt-get update done?`,
  });
  for (const stanza of parseControlStanzas(stdout.toString("utf8"))) {
    const pkg = stanzaToPackage(stanza);
    if (pkg === undefined || !all.includes(pkg.name) || result.has(pkg.name)) continue;
    if (pkg.architecture !== arch && pkg.architecture !== "all") {
      throw new GuestBuildError("RESOLVE_FAILED", `apt-cache show ${pkg.name}:${arch} gave ${pkg.name} ${pkg.version} of architecture ${pkg.architecture}`);
    }
    result.set(pkg.name, pkg);
  }
  const missing = names.filter((n) => !result.has(n));
  if (missing.length > 0) {
    throw new GuestBuildError("RESOLVE_FAILED", `apt-cache has no ${arch} candidate for: ${missing.join(", ")}`);
  }
  return result;
}

/** The file name `apt-get download` gives a package ("1:2.0" is written "1%3a2.0"). */
export function debFileName(pkg: { name: string; version: string; architecture: string }): string {
  return `${pkg.name}_${pkg.version.replace(/:/g, "%3a")}_${pkg.architecture}.deb`;
}

async function fileSha256(path: string): Promise<string> {
  return createHash("sha256").update(await readFile(path)).digest("hex");
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** True when `path` is the .deb of exactly this package version (by SHA256 when known, else by its control fields). */
export async function isDebOf(path: string, pkg: AptPackage): Promise<boolean> {
  if (!(await exists(path))) return false;
  if (pkg.sha256 !== undefined) return (await fileSha256(path)) === pkg.sha256;
  try {
    const { stdout } = await run("dpkg-deb", ["--show", "--showformat=${Package} ${Version}", path]);
    return stdout.toString("utf8").trim() === `${pkg.name} ${pkg.version}`;
  } catch {
    return false;
  }
}

/**
 * Makes sure `debDir` holds the .deb of every package; downloads only the
 * missing ones, in one `apt-get download` call. Returns name → .deb path.
 */
export async function downloadPackages(
  pkgs: readonly AptPackage[],
  debDir: string,
  log: (line: string) => void,
): Promise<Map<string, string>> {
  const paths = new Map<string, string>();
  const missing: AptPackage[] = [];
  for (const pkg of pkgs) {
    const path = join(debDir, debFileName(pkg));
    paths.set(pkg.name, path);
    if (!(await isDebOf(path, pkg))) missing.push(pkg);
  }
  log(`guest: downloading ${missing.length} packages (${pkgs.length - missing.length} of ${pkgs.length} cached)`);
  if (missing.length > 0) {
    await run("apt-get", ["download", "-q", ...missing.map((p) => `${p.name}:${p.architecture}=${p.version}`)], {
      cwd: debDir,
      failCode: "DOWNLOAD_FAILED",
      what: `downloading ${missing.map((p) => p.name).join(", ")}`,
    });
    for (const pkg of missing) {
      const path = join(debDir, debFileName(pkg));
      if (!(await isDebOf(path, pkg))) {
        throw new GuestBuildError("DOWNLOAD_FAILED", `apt-get download did not produce a valid ${path} for ${pkg.name} ${pkg.version}`);
      }
    }
  }
  return paths;
}

export async function unpackDeb(debPath: string, destDir: string): Promise<void> {
  await run("dpkg-deb", ["-x", debPath, destDir], { failCode: "UNPACK_FAILED", what: `unpacking ${debPath}` });
}
