/**
 * A reader for the parts of ELF files the guest build needs, so that no
 * guest program ever has to run on the host (the host kernel here refuses
 * i386 executables, and a build must not depend on running guest code):
 *
 * - section headers, by name (`.modinfo` of a kernel module);
 * - program headers: PT_INTERP (the dynamic loader a binary asks for),
 *   PT_DYNAMIC, whose DT_NEEDED / DT_SONAME / DT_RUNPATH / DT_RPATH strings
 *   are found through DT_STRTAB, a virtual address mapped to a file offset
 *   by the PT_LOAD segments (what the loader itself does; section headers
 *   may be stripped), and PT_NOTE (a kernel's Xen PVH entry note).
 *
 * Layouts: System V gABI, "ELF Header", "Sections", "Program Header",
 * "Dynamic Section", "Note Section" (linux/include/uapi/linux/elf.h:
 * Elf32_Ehdr, Elf64_Ehdr, Elf32_Shdr, Elf64_Shdr, Elf32_Phdr, Elf64_Phdr,
 * Elf32_Dyn, Elf64_Dyn, Elf32_Nhdr/Elf64_Nhdr).
 * Little-endian only (every Debian x86 architecture).
 */

import { GuestBuildError, type GuestBuildErrorCode } from "./errors.js";

const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46]; // "\x7fELF"
const EI_CLASS = 4;
const EI_DATA = 5;
export const ELFCLASS32 = 1;
export const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;

/** e_type values (gABI). */
export const ET_REL = 1;
export const ET_EXEC = 2;
export const ET_DYN = 3;
/** e_machine values (gABI): Intel 80386, AMD x86-64. */
export const EM_386 = 3;
export const EM_X86_64 = 62;

/** sh_type of a section that occupies no file space (.bss). */
const SHT_NOBITS = 8;
/** p_type values (gABI). */
const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const PT_NOTE = 4;
/** d_tag values (gABI). */
const DT_NULL = 0;
const DT_NEEDED = 1;
const DT_STRTAB = 5;
const DT_STRSZ = 10;
const DT_SONAME = 14;
const DT_RPATH = 15;
const DT_RUNPATH = 29;

/** Field offsets and sizes per ELF class, declared once. */
const LAYOUT = {
  [ELFCLASS32]: {
    ehdr: { e_type: 16, e_machine: 18, e_phoff: 28, e_shoff: 32, e_phentsize: 42, e_phnum: 44, e_shentsize: 46, e_shnum: 48, e_shstrndx: 50, size: 52 },
    shdr: { sh_name: 0, sh_type: 4, sh_offset: 16, sh_size: 20 },
    phdr: { p_type: 0, p_offset: 4, p_vaddr: 8, p_filesz: 16, p_align: 28 },
    dyn: { d_tag: 0, d_val: 4, size: 8 },
    word: 4,
  },
  [ELFCLASS64]: {
    ehdr: { e_type: 16, e_machine: 18, e_phoff: 32, e_shoff: 40, e_phentsize: 54, e_phnum: 56, e_shentsize: 58, e_shnum: 60, e_shstrndx: 62, size: 64 },
    shdr: { sh_name: 0, sh_type: 4, sh_offset: 24, sh_size: 32 },
    phdr: { p_type: 0, p_offset: 8, p_vaddr: 16, p_filesz: 32, p_align: 48 },
    dyn: { d_tag: 0, d_val: 8, size: 16 },
    word: 8,
  },
} as const;

export interface ElfSection {
  name: string;
  /** sh_type; a SHT_NOBITS section has a size but no bytes in the file. */
  type: number;
  offset: number;
  size: number;
}

interface ProgramHeader {
  type: number;
  offset: number;
  /** A bigint: a kernel's segments sit at the top of the address space (0xffffffff81000000), beyond a safe number. */
  vaddr: bigint;
  filesz: number;
  align: number;
}

/** One note of a PT_NOTE segment (gABI "Note Section"). */
export interface ElfNote {
  /** The owner ("Xen", "GNU", "Linux"), without its NUL. */
  name: string;
  /** n_type: meaning defined by the owner. */
  type: number;
  desc: Uint8Array;
}

export interface ElfDynamicInfo {
  /** DT_NEEDED entries, in file order. */
  needed: string[];
  /** DT_SONAME, when the file has one. */
  soname: string | undefined;
  /** DT_RUNPATH or, when absent, DT_RPATH, split at ":" (empty when neither). */
  searchPath: string[];
}

export class ElfFile {
  readonly class: typeof ELFCLASS32 | typeof ELFCLASS64;
  readonly type: number;
  readonly machine: number;
  private readonly view: DataView;
  private readonly L: (typeof LAYOUT)[typeof ELFCLASS32] | (typeof LAYOUT)[typeof ELFCLASS64];

  /**
   * `what` names the file in every error ("redis-check-rdb from redis-tools
   * 5:7.0.15-1"); `code` is the GuestBuildError code of those errors.
   */
  constructor(
    readonly bytes: Uint8Array,
    readonly what: string,
    private readonly code: GuestBuildErrorCode = "ELF_INVALID",
  ) {
    if (bytes.length < LAYOUT[ELFCLASS32].ehdr.size || !ELF_MAGIC.every((b, i) => bytes[i] === b)) throw this.fail("not an ELF file");
    if (bytes[EI_DATA] !== ELFDATA2LSB) throw this.fail("not a little-endian ELF file");
    const cls = bytes[EI_CLASS];
    if (cls !== ELFCLASS32 && cls !== ELFCLASS64) throw this.fail(`unknown ELF class ${String(cls)}`);
    this.class = cls;
    this.L = LAYOUT[cls];
    if (bytes.length < this.L.ehdr.size) throw this.fail("truncated ELF header");
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.type = this.u16(this.L.ehdr.e_type);
    this.machine = this.u16(this.L.ehdr.e_machine);
  }

  fail(why: string): GuestBuildError {
    return new GuestBuildError(this.code, `${this.what}: ${why}`);
  }

  private u16(off: number): number {
    if (off + 2 > this.bytes.length) throw this.fail(`read past the end of the file at ${off}`);
    return this.view.getUint16(off, true);
  }

  private u32(off: number): number {
    if (off + 4 > this.bytes.length) throw this.fail(`read past the end of the file at ${off}`);
    return this.view.getUint32(off, true);
  }

  /** An address-sized field (Elf32_Word/Addr/Off or Elf64_Xword/Addr/Off). */
  private word(off: number): number {
    if (this.L.word === 4) return this.u32(off);
    if (off + 8 > this.bytes.length) throw this.fail(`read past the end of the file at ${off}`);
    const v = this.view.getBigUint64(off, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw this.fail(`value out of range at offset ${off}`);
    return Number(v);
  }

  /** An address field (Elf32_Addr / Elf64_Addr), whatever its size. */
  private address(off: number): bigint {
    if (this.L.word === 4) return BigInt(this.u32(off));
    if (off + 8 > this.bytes.length) throw this.fail(`read past the end of the file at ${off}`);
    return this.view.getBigUint64(off, true);
  }

  /** A signed d_tag: the processor- and OS-specific tags are large; we only compare with small ones. */
  private tag(off: number): number {
    if (this.L.word === 4) return this.view.getInt32(off, true);
    if (off + 8 > this.bytes.length) throw this.fail(`read past the end of the file at ${off}`);
    const v = this.view.getBigInt64(off, true);
    return v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER) ? -1 : Number(v);
  }

  private cString(start: number, end: number): string {
    if (start >= end || start >= this.bytes.length) throw this.fail(`string at offset ${start} is outside its table`);
    let stop = start;
    const limit = Math.min(end, this.bytes.length);
    while (stop < limit && this.bytes[stop] !== 0) stop++;
    if (stop === limit) throw this.fail(`string at offset ${start} is not NUL-terminated inside its table`);
    return Buffer.from(this.bytes.buffer, this.bytes.byteOffset + start, stop - start).toString("latin1");
  }

  /** Every section with its name; empty when the file has no section header table. */
  sections(): ElfSection[] {
    const e = this.L.ehdr;
    const shoff = this.word(e.e_shoff);
    const shentsize = this.u16(e.e_shentsize);
    const shnum = this.u16(e.e_shnum);
    const shstrndx = this.u16(e.e_shstrndx);
    if (shoff === 0 || shnum === 0) return [];
    if (shentsize < this.L.shdr.sh_size + this.L.word || shoff + shentsize * shnum > this.bytes.length) throw this.fail("bad section header table");
    if (shstrndx >= shnum) throw this.fail("bad section name table index");
    const raw = (i: number): { name: number; type: number; offset: number; size: number } => {
      const base = shoff + i * shentsize;
      const s = {
        name: this.u32(base + this.L.shdr.sh_name),
        type: this.u32(base + this.L.shdr.sh_type),
        offset: this.word(base + this.L.shdr.sh_offset),
        size: this.word(base + this.L.shdr.sh_size),
      };
      if (s.type !== SHT_NOBITS && s.offset + s.size > this.bytes.length) throw this.fail(`section ${i} runs past the end of the file`);
      return s;
    };
    const strtab = raw(shstrndx);
    const out: ElfSection[] = [];
    for (let i = 0; i < shnum; i++) {
      const s = raw(i);
      out.push({ name: this.cString(strtab.offset + s.name, strtab.offset + strtab.size), type: s.type, offset: s.offset, size: s.size });
    }
    return out;
  }

  /** The contents of the first section called `name`, or undefined. */
  section(name: string): Uint8Array | undefined {
    const s = this.sections().find((x) => x.name === name);
    if (s === undefined) return undefined;
    return s.type === SHT_NOBITS ? new Uint8Array(0) : this.bytes.subarray(s.offset, s.offset + s.size);
  }

  private programHeaders(): ProgramHeader[] {
    const e = this.L.ehdr;
    const phoff = this.word(e.e_phoff);
    const phentsize = this.u16(e.e_phentsize);
    const phnum = this.u16(e.e_phnum);
    if (phoff === 0 || phnum === 0) return [];
    if (phentsize < this.L.phdr.p_align + this.L.word || phoff + phentsize * phnum > this.bytes.length) throw this.fail("bad program header table");
    const out: ProgramHeader[] = [];
    for (let i = 0; i < phnum; i++) {
      const base = phoff + i * phentsize;
      const p = {
        type: this.u32(base + this.L.phdr.p_type),
        offset: this.word(base + this.L.phdr.p_offset),
        vaddr: this.address(base + this.L.phdr.p_vaddr),
        filesz: this.word(base + this.L.phdr.p_filesz),
        align: this.word(base + this.L.phdr.p_align),
      };
      if ((p.type === PT_DYNAMIC || p.type === PT_INTERP || p.type === PT_NOTE) && p.offset + p.filesz > this.bytes.length) {
        throw this.fail(`program header ${i} (type ${p.type}) runs past the end of the file`);
      }
      out.push(p);
    }
    return out;
  }

  /** The loader path of PT_INTERP ("/lib/ld-linux.so.2"), or undefined for a static or relocatable file. */
  interpreter(): string | undefined {
    const p = this.programHeaders().find((h) => h.type === PT_INTERP);
    if (p === undefined) return undefined;
    return this.cString(p.offset, p.offset + p.filesz);
  }

  /**
   * Every note of every PT_NOTE segment, in file order. Each note is
   * n_namesz, n_descsz, n_type (32-bit words in both classes), then the name
   * and the descriptor, each padded to the segment's alignment: 4, or 8 when
   * p_align says so (what glibc and the kernel's own readers do).
   */
  notes(): ElfNote[] {
    const out: ElfNote[] = [];
    for (const p of this.programHeaders().filter((h) => h.type === PT_NOTE)) {
      const align = p.align === 8 ? 8 : 4;
      const pad = (n: number): number => Math.ceil(n / align) * align;
      const end = p.offset + p.filesz;
      let off = p.offset;
      while (off + 12 <= end) {
        const namesz = this.u32(off);
        const descsz = this.u32(off + 4);
        const type = this.u32(off + 8);
        const nameOff = off + 12;
        const descOff = nameOff + pad(namesz);
        const next = descOff + pad(descsz);
        if (descOff + descsz > end) throw this.fail(`note at offset ${off} runs past its PT_NOTE segment`);
        const name = namesz === 0 ? "" : this.cString(nameOff, nameOff + namesz);
        out.push({ name, type, desc: this.bytes.subarray(descOff, descOff + descsz) });
        off = next;
      }
    }
    return out;
  }

  /** File offset of a virtual address, through the PT_LOAD segment holding it. */
  private offsetOf(address: number, loads: readonly ProgramHeader[]): number {
    const vaddr = BigInt(address);
    for (const p of loads) {
      if (vaddr >= p.vaddr && vaddr < p.vaddr + BigInt(p.filesz)) return p.offset + Number(vaddr - p.vaddr);
    }
    throw this.fail(`address 0x${vaddr.toString(16)} lies in no PT_LOAD segment`);
  }

  /** DT_NEEDED, DT_SONAME and the search path of PT_DYNAMIC; undefined for a file without one (static). */
  dynamic(): ElfDynamicInfo | undefined {
    const headers = this.programHeaders();
    const dyn = headers.find((h) => h.type === PT_DYNAMIC);
    if (dyn === undefined) return undefined;
    const loads = headers.filter((h) => h.type === PT_LOAD);
    const D = this.L.dyn;
    const entries: Array<{ tag: number; val: number }> = [];
    for (let off = dyn.offset; off + D.size <= dyn.offset + dyn.filesz; off += D.size) {
      const tag = this.tag(off + D.d_tag);
      if (tag === DT_NULL) break;
      entries.push({ tag, val: this.word(off + D.d_val) });
    }
    const strtabAddr = entries.find((x) => x.tag === DT_STRTAB)?.val;
    const strsz = entries.find((x) => x.tag === DT_STRSZ)?.val;
    if (strtabAddr === undefined || strsz === undefined) throw this.fail("PT_DYNAMIC has no DT_STRTAB/DT_STRSZ");
    const strOff = this.offsetOf(strtabAddr, loads);
    if (strOff + strsz > this.bytes.length) throw this.fail("the dynamic string table runs past the end of the file");
    const str = (i: number): string => this.cString(strOff + i, strOff + strsz);
    const runpath = entries.find((x) => x.tag === DT_RUNPATH) ?? entries.find((x) => x.tag === DT_RPATH);
    const sonameEntry = entries.find((x) => x.tag === DT_SONAME);
    return {
      needed: entries.filter((x) => x.tag === DT_NEEDED).map((x) => str(x.val)),
      soname: sonameEntry === undefined ? undefined : str(sonameEntry.val),
      searchPath: runpath === undefined ? [] : str(runpath.val).split(":").filter((s) => s !== ""),
    };
  }
}
