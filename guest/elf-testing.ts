/**
 * Synthetic ELF files for unit tests: an executable or shared object with
 * PT_LOAD, PT_INTERP and PT_DYNAMIC (DT_NEEDED, DT_SONAME, DT_RUNPATH,
 * DT_STRTAB, DT_STRSZ), a kernel module with .modinfo, a kernel image with
 * PT_NOTE notes, laid out as elf.ts reads them. Not a linker: the files
 * hold no code and could not run anywhere.
 */

import { EM_386, EM_X86_64, ET_DYN, ET_EXEC } from "./elf.js";

export interface SyntheticElf {
  is64?: boolean;
  machine?: number;
  /** ET_EXEC for a program, ET_DYN for a library (default: ET_DYN if soname is set). */
  type?: number;
  interpreter?: string;
  needed?: readonly string[];
  soname?: string;
  runpath?: string;
}

const BASE_VADDR = 0x10000;

export function makeDynamicElf(spec: SyntheticElf): Buffer {
  const is64 = spec.is64 === true;
  const ehdrSize = is64 ? 64 : 52;
  const phentsize = is64 ? 56 : 32;
  const dynEntSize = is64 ? 16 : 8;
  const hasInterp = spec.interpreter !== undefined;
  const phnum = hasInterp ? 3 : 2;

  // .dynstr: "\0" then each string once
  const strings: string[] = [];
  const strOffset = new Map<string, number>();
  let strSize = 1;
  const addString = (s: string): number => {
    const known = strOffset.get(s);
    if (known !== undefined) return known;
    strOffset.set(s, strSize);
    strings.push(s);
    strSize += Buffer.byteLength(s, "latin1") + 1;
    return strOffset.get(s) as number;
  };
  const dyn: Array<[number, number]> = [];
  for (const n of spec.needed ?? []) dyn.push([1, addString(n)]); // DT_NEEDED
  if (spec.soname !== undefined) dyn.push([14, addString(spec.soname)]); // DT_SONAME
  if (spec.runpath !== undefined) dyn.push([29, addString(spec.runpath)]); // DT_RUNPATH
  const dynstr = Buffer.concat([Buffer.alloc(1), ...strings.map((s) => Buffer.from(`${s}\0`, "latin1"))]);

  const phoff = ehdrSize;
  const interpOff = phoff + phnum * phentsize;
  const interp = Buffer.from(hasInterp ? `${spec.interpreter}\0` : "", "latin1");
  const strOff = interpOff + interp.length;
  const dynOff = Math.ceil((strOff + dynstr.length) / 8) * 8;
  dyn.push([5, BASE_VADDR + strOff], [10, dynstr.length], [0, 0]); // DT_STRTAB, DT_STRSZ, DT_NULL
  const total = dynOff + dyn.length * dynEntSize;
  const buf = Buffer.alloc(total);

  buf.set([0x7f, 0x45, 0x4c, 0x46, is64 ? 2 : 1, 1, 1], 0);
  buf.writeUInt16LE(spec.type ?? (spec.soname !== undefined ? ET_DYN : ET_EXEC), 16);
  buf.writeUInt16LE(spec.machine ?? EM_386, 18);
  buf.writeUInt32LE(1, 20); // e_version
  if (is64) {
    buf.writeBigUInt64LE(BigInt(phoff), 32);
    buf.writeUInt16LE(ehdrSize, 52);
    buf.writeUInt16LE(phentsize, 54);
    buf.writeUInt16LE(phnum, 56);
  } else {
    buf.writeUInt32LE(phoff, 28);
    buf.writeUInt16LE(ehdrSize, 40);
    buf.writeUInt16LE(phentsize, 42);
    buf.writeUInt16LE(phnum, 44);
  }
  const writePhdr = (i: number, type: number, offset: number, size: number): void => {
    const b = phoff + i * phentsize;
    buf.writeUInt32LE(type, b);
    if (is64) {
      buf.writeBigUInt64LE(BigInt(offset), b + 8);
      buf.writeBigUInt64LE(BigInt(BASE_VADDR + offset), b + 16);
      buf.writeBigUInt64LE(BigInt(BASE_VADDR + offset), b + 24);
      buf.writeBigUInt64LE(BigInt(size), b + 32);
      buf.writeBigUInt64LE(BigInt(size), b + 40);
    } else {
      buf.writeUInt32LE(offset, b + 4);
      buf.writeUInt32LE(BASE_VADDR + offset, b + 8);
      buf.writeUInt32LE(BASE_VADDR + offset, b + 12);
      buf.writeUInt32LE(size, b + 16);
      buf.writeUInt32LE(size, b + 20);
    }
  };
  writePhdr(0, 1, 0, total); // PT_LOAD: the whole file
  writePhdr(1, 2, dynOff, dyn.length * dynEntSize); // PT_DYNAMIC
  if (hasInterp) writePhdr(2, 3, interpOff, interp.length); // PT_INTERP
  interp.copy(buf, interpOff);
  dynstr.copy(buf, strOff);
  dyn.forEach(([tag, val], i) => {
    const b = dynOff + i * dynEntSize;
    if (is64) {
      buf.writeBigInt64LE(BigInt(tag), b);
      buf.writeBigUInt64LE(BigInt(val), b + 8);
    } else {
      buf.writeInt32LE(tag, b);
      buf.writeUInt32LE(val, b + 4);
    }
  });
  return buf;
}

/** Builds a minimal little-endian ELF32 or ELF64 file with a .shstrtab and, optionally, a .modinfo section. */
export function makeModuleElf(is64: boolean, modinfo: string | null): Buffer {
  const ehdrSize = is64 ? 64 : 52;
  const shentsize = is64 ? 64 : 40;
  const shstrtab = Buffer.from("\0.shstrtab\0.modinfo\0.text\0", "latin1");
  const infoBytes = Buffer.from(modinfo ?? "", "utf8");
  const shstrtabOff = ehdrSize;
  const infoOff = shstrtabOff + shstrtab.length;
  const shoff = infoOff + infoBytes.length;
  const shnum = 3; // null, .shstrtab, .modinfo (or .text)
  const buf = Buffer.alloc(shoff + shnum * shentsize);
  buf.set([0x7f, 0x45, 0x4c, 0x46, is64 ? 2 : 1, 1, 1], 0);
  if (is64) {
    buf.writeBigUInt64LE(BigInt(shoff), 40);
    buf.writeUInt16LE(shentsize, 58);
    buf.writeUInt16LE(shnum, 60);
    buf.writeUInt16LE(1, 62);
  } else {
    buf.writeUInt32LE(shoff, 32);
    buf.writeUInt16LE(shentsize, 46);
    buf.writeUInt16LE(shnum, 48);
    buf.writeUInt16LE(1, 50);
  }
  shstrtab.copy(buf, shstrtabOff);
  infoBytes.copy(buf, infoOff);
  const writeSection = (i: number, nameOff: number, off: number, size: number): void => {
    const base = shoff + i * shentsize;
    buf.writeUInt32LE(nameOff, base);
    if (is64) {
      buf.writeBigUInt64LE(BigInt(off), base + 24);
      buf.writeBigUInt64LE(BigInt(size), base + 32);
    } else {
      buf.writeUInt32LE(off, base + 16);
      buf.writeUInt32LE(size, base + 20);
    }
  };
  writeSection(1, 1, shstrtabOff, shstrtab.length);
  writeSection(2, modinfo === null ? 20 : 11, infoOff, infoBytes.length);
  return buf;
}


/** Where x86-64 Linux links itself (__START_KERNEL_map + 16 MiB). */
const KERNEL_VADDR = 0xffffffff81000000n;

export interface SyntheticNote {
  name: string;
  type: number;
  desc: Uint8Array;
}

/**
 * An ELF64 x86-64 executable shaped like a kernel's vmlinux: a PT_LOAD
 * over the whole file and a PT_NOTE holding `notes` (each name and
 * descriptor padded to `align`, 4 as Linux's ELFNOTE macros do), then
 * `trailer` bytes (the relocations the x86 bzImage payload appends).
 */
export function makeNoteElf(notes: readonly SyntheticNote[], opts: { align?: 4 | 8; machine?: number; trailer?: Uint8Array } = {}): Buffer {
  const align = opts.align ?? 4;
  const pad = (b: Buffer): Buffer => Buffer.concat([b, Buffer.alloc((align - (b.length % align)) % align)]);
  const noteBytes = Buffer.concat(
    notes.map((n) => {
      const name = Buffer.from(`${n.name}\0`, "latin1");
      const head = Buffer.alloc(12);
      head.writeUInt32LE(name.length, 0);
      head.writeUInt32LE(n.desc.length, 4);
      head.writeUInt32LE(n.type, 8);
      return Buffer.concat([head, pad(name), pad(Buffer.from(n.desc))]);
    }),
  );
  const ehdrSize = 64;
  const phentsize = 56;
  const phnum = 2;
  const noteOff = ehdrSize + phnum * phentsize;
  const trailer = Buffer.from(opts.trailer ?? new Uint8Array(0));
  const buf = Buffer.alloc(noteOff + noteBytes.length);
  buf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  buf.writeUInt16LE(ET_EXEC, 16);
  buf.writeUInt16LE(opts.machine ?? EM_X86_64, 18);
  buf.writeUInt32LE(1, 20);
  buf.writeBigUInt64LE(BigInt(ehdrSize), 32); // e_phoff
  buf.writeUInt16LE(ehdrSize, 52);
  buf.writeUInt16LE(phentsize, 54);
  buf.writeUInt16LE(phnum, 56);
  const phdr = (i: number, type: number, offset: number, size: number, palign: number): void => {
    const b = ehdrSize + i * phentsize;
    buf.writeUInt32LE(type, b);
    buf.writeBigUInt64LE(BigInt(offset), b + 8);
    buf.writeBigUInt64LE(KERNEL_VADDR + BigInt(offset), b + 16); // p_vaddr: beyond a safe number, as a kernel's
    buf.writeBigUInt64LE(BigInt(0x1000000 + offset), b + 24); // p_paddr
    buf.writeBigUInt64LE(BigInt(size), b + 32);
    buf.writeBigUInt64LE(BigInt(size), b + 40);
    buf.writeBigUInt64LE(BigInt(palign), b + 48);
  };
  phdr(0, 1, 0, buf.length, 0x200000); // PT_LOAD
  phdr(1, 4, noteOff, noteBytes.length, align); // PT_NOTE
  noteBytes.copy(buf, noteOff);
  return Buffer.concat([buf, trailer]);
}
