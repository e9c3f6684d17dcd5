/**
 * Reads the `.modinfo` section of a Linux kernel module (an ELF relocatable
 * object): NUL-separated "key=value" strings such as `name=ext4`,
 * `depends=jbd2,mbcache,crc16`, `softdep=pre: crypto-crc32c`.
 *
 * ELF layout: the System V ABI gABI, "ELF Header" and "Sections"
 * (linux/include/uapi/linux/elf.h: Elf32_Ehdr, Elf64_Ehdr, Elf32_Shdr, Elf64_Shdr).
 * The host has no `modinfo` (kmod) necessarily, so we read it ourselves.
 */

import { GuestBuildError } from "./errors.js";

const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46]; // "\x7fELF"
const EI_CLASS = 4;
const EI_DATA = 5;
const ELFCLASS32 = 1;
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;

/** Offsets inside the ELF header and section header, per class. */
const LAYOUT = {
  [ELFCLASS32]: { e_shoff: 32, e_shentsize: 46, e_shnum: 48, e_shstrndx: 50, ehdrSize: 52, sh_name: 0, sh_offset: 16, sh_size: 20 },
  [ELFCLASS64]: { e_shoff: 40, e_shentsize: 58, e_shnum: 60, e_shstrndx: 62, ehdrSize: 64, sh_name: 0, sh_offset: 24, sh_size: 32 },
} as const;

export interface ModInfo {
  /** All values per key, in file order (e.g. several `alias=`). */
  readonly fields: ReadonlyMap<string, readonly string[]>;
  /** The module's name (`name=`), with "_" as the kernel spells it. */
  readonly name: string;
  /** Modules that must be loaded first (`depends=`), empty when none. */
  readonly depends: readonly string[];
}

/** The kernel treats "-" and "_" in module names alike; we compare with "_". */
export function canonicalModuleName(name: string): string {
  return name.replace(/-/g, "_");
}

export function readModInfo(bytes: Uint8Array, what: string): ModInfo {
  const fail = (why: string): GuestBuildError => new GuestBuildError("MODULE_INVALID", `${what}: ${why}`);
  if (bytes.length < 64 || !ELF_MAGIC.every((b, i) => bytes[i] === b)) throw fail("not an ELF file");
  if (bytes[EI_DATA] !== ELFDATA2LSB) throw fail("not a little-endian ELF file");
  const cls = bytes[EI_CLASS];
  if (cls !== ELFCLASS32 && cls !== ELFCLASS64) throw fail(`unknown ELF class ${String(cls)}`);
  const L = LAYOUT[cls];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const word = (off: number): number => {
    if (cls === ELFCLASS32) return view.getUint32(off, true);
    const v = view.getBigUint64(off, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw fail(`ELF offset out of range at ${off}`);
    return Number(v);
  };

  const shoff = word(L.e_shoff);
  const shentsize = view.getUint16(L.e_shentsize, true);
  const shnum = view.getUint16(L.e_shnum, true);
  const shstrndx = view.getUint16(L.e_shstrndx, true);
  if (shoff === 0 || shnum === 0 || shoff + shentsize * shnum > bytes.length) throw fail("bad section header table");
  if (shstrndx >= shnum) throw fail("bad section name table index");

  const section = (i: number): { name: number; offset: number; size: number } => {
    const base = shoff + i * shentsize;
    const s = { name: view.getUint32(base + L.sh_name, true), offset: word(base + L.sh_offset), size: word(base + L.sh_size) };
    if (s.offset + s.size > bytes.length) throw fail(`section ${i} runs past the end of the file`);
    return s;
  };
  const strtab = section(shstrndx);
  const sectionName = (nameOff: number): string => {
    const start = strtab.offset + nameOff;
    let end = start;
    while (end < strtab.offset + strtab.size && bytes[end] !== 0) end++;
    return Buffer.from(bytes.buffer, bytes.byteOffset + start, end - start).toString("latin1");
  };

  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (sectionName(s.name) !== ".modinfo") continue;
    const text = Buffer.from(bytes.buffer, bytes.byteOffset + s.offset, s.size).toString("utf8");
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
    if (name === undefined || name === "") throw fail(".modinfo has no name=");
    const dependsText = fields.get("depends")?.[0] ?? "";
    const depends = dependsText === "" ? [] : dependsText.split(",").map(canonicalModuleName);
    return { fields, name: canonicalModuleName(name), depends };
  }
  throw fail("no .modinfo section");
}
