/**
 * Reads the `.modinfo` section of a Linux kernel module (an ELF relocatable
 * object, read by elf.ts): NUL-separated "key=value" strings such as
 * `name=ext4`, `depends=jbd2,mbcache,crc16`, `softdep=pre: crypto-crc32c`,
 * `alias=crypto-crc32c`. The host may have no `modinfo` (kmod), and the
 * kernel package ships no modules.dep (depmod writes it at install time), so
 * we read each module ourselves.
 */

import { ElfFile } from "./elf.js";
import { GuestBuildError } from "./errors.js";

export interface ModInfo {
  /** All values per key, in file order (e.g. several `alias=`). */
  readonly fields: ReadonlyMap<string, readonly string[]>;
  /** The module's name (`name=`), with "_" as the kernel spells it. */
  readonly name: string;
  /** Modules that must be loaded first (`depends=`), empty when none. */
  readonly depends: readonly string[];
  /** `softdep=pre:` names (modules or aliases modprobe would load first), canonicalized. */
  readonly softdepsPre: readonly string[];
  /** `alias=` values, canonicalized. */
  readonly aliases: readonly string[];
}

/** The kernel treats "-" and "_" in module names alike; we compare with "_". */
export function canonicalModuleName(name: string): string {
  return name.replace(/-/g, "_");
}

/**
 * `softdep=pre: a b post: c` → the names after "pre:" (modprobe.d(5):
 * "softdep MODULE pre: ... post: ...").
 */
export function parseSoftdepPre(values: readonly string[]): string[] {
  const out: string[] = [];
  for (const value of values) {
    let inPre = false;
    for (const word of value.split(/\s+/)) {
      if (word === "") continue;
      if (word === "pre:") inPre = true;
      else if (word === "post:") inPre = false;
      else if (inPre) out.push(canonicalModuleName(word));
    }
  }
  return out;
}

export function readModInfo(bytes: Uint8Array, what: string): ModInfo {
  const elf = new ElfFile(bytes, what, "MODULE_INVALID");
  const section = elf.section(".modinfo");
  if (section === undefined) throw new GuestBuildError("MODULE_INVALID", `${what}: no .modinfo section`);
  const text = Buffer.from(section.buffer, section.byteOffset, section.byteLength).toString("utf8");
  const fields = new Map<string, string[]>();
  for (const item of text.split("\0")) {
    const eq = item.indexOf("=");
    if (eq <= 0) continue;
    const key = item.slice(0, eq);
    const list = fields.get(key) ?? [];
    list.push(item.slice(eq + 1));
    fields.set(key, list);
  }
  const name = fields.get("name")?.[0];
  if (name === undefined || name === "") throw new GuestBuildError("MODULE_INVALID", `${what}: .modinfo has no name=`);
  const dependsText = fields.get("depends")?.[0] ?? "";
  const depends = dependsText === "" ? [] : dependsText.split(",").map(canonicalModuleName);
  return {
    fields,
    name: canonicalModuleName(name),
    depends,
    softdepsPre: parseSoftdepPre(fields.get("softdep") ?? []),
    aliases: (fields.get("alias") ?? []).map(canonicalModuleName),
  };
}
