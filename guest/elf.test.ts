import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { EM_386, EM_X86_64, ET_DYN, ET_EXEC, ElfFile } from "./elf.js";
import { makeDynamicElf } from "./elf-testing.js";
import { GuestBuildError } from "./errors.js";

for (const is64 of [false, true]) {
  test(`ELF${is64 ? 64 : 32}: interpreter, DT_NEEDED, DT_SONAME and DT_RUNPATH through PT_DYNAMIC`, () => {
    const bin = new ElfFile(
      makeDynamicElf({ is64, machine: is64 ? EM_X86_64 : EM_386, interpreter: "/lib/ld-linux.so.2", needed: ["libssl.so.3", "libc.so.6"], runpath: "$ORIGIN/../lib:/opt/x" }),
      "redis",
    );
    assert.equal(bin.class, is64 ? 2 : 1);
    assert.equal(bin.type, ET_EXEC);
    assert.equal(bin.machine, is64 ? EM_X86_64 : EM_386);
    assert.equal(bin.interpreter(), "/lib/ld-linux.so.2");
    assert.deepEqual(bin.dynamic(), { needed: ["libssl.so.3", "libc.so.6"], soname: undefined, searchPath: ["$ORIGIN/../lib", "/opt/x"] });

    const lib = new ElfFile(makeDynamicElf({ is64, soname: "libz.so.1", needed: ["libc.so.6"] }), "libz");
    assert.equal(lib.type, ET_DYN);
    assert.equal(lib.interpreter(), undefined);
    assert.deepEqual(lib.dynamic(), { needed: ["libc.so.6"], soname: "libz.so.1", searchPath: [] });
  });
}

test("a real host binary (this node): its loader and libc, as the host's loader would see them", async () => {
  const elf = new ElfFile(await readFile(process.execPath), process.execPath);
  assert.equal(elf.machine, EM_X86_64);
  assert.match(elf.interpreter() ?? "", /^\/lib64\/ld-linux-x86-64\.so\.2$/);
  const dyn = elf.dynamic();
  assert.ok(dyn !== undefined && dyn.needed.includes("libc.so.6"), `node needs libc.so.6: ${JSON.stringify(dyn)}`);
  assert.ok(elf.sections().some((s) => s.name === ".dynamic"));
  // .bss takes no file space (SHT_NOBITS): its size must not be read as bytes past the end
  assert.ok(elf.sections().some((s) => s.name === ".bss" && s.type === 8));
  assert.equal(elf.section(".bss")?.length, 0);
});

test("bad ELF files are refused with the file's name and the reason", () => {
  const bad = (bytes: Uint8Array, re: RegExp): void =>
    assert.throws(() => {
      const e = new ElfFile(bytes, "f.so");
      e.interpreter();
      e.dynamic();
    }, (err: unknown) => err instanceof GuestBuildError && err.code === "ELF_INVALID" && re.test(err.message) && err.message.startsWith("f.so: "));
  bad(Buffer.from("#!/bin/sh\necho hi\n".padEnd(80, " ")), /not an ELF file/);
  const good = makeDynamicElf({ interpreter: "/lib/ld-linux.so.2", needed: ["libc.so.6"] });
  const bigEndian = Buffer.from(good);
  bigEndian[5] = 2;
  bad(bigEndian, /not a little-endian/);
  bad(good.subarray(0, 60), /bad program header table/);
  // DT_STRTAB pointing outside every PT_LOAD segment
  const strtabOutside = Buffer.from(good);
  const dynOff = strtabOutside.length - 3 * 8; // DT_STRTAB, DT_STRSZ, DT_NULL are the last three entries
  strtabOutside.writeUInt32LE(0x7000_0000, dynOff + 4);
  bad(strtabOutside, /lies in no PT_LOAD segment/);
});
