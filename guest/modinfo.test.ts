import { test } from "node:test";
import assert from "node:assert/strict";
import { canonicalModuleName, readModInfo } from "./modinfo.js";
import { GuestBuildError } from "./errors.js";

/** Builds a minimal little-endian ELF32 or ELF64 file with a .shstrtab and, optionally, a .modinfo section. */
function makeElf(is64: boolean, modinfo: string | null): Buffer {
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

const EXT4_INFO = "license=GPL\0softdep=pre: crypto-crc32c\0depends=jbd2,mbcache,crc16\0\0\0name=ext4\0alias=fs-ext4\0alias=ext3\0";

for (const is64 of [false, true]) {
  test(`reads name and depends from an ELF${is64 ? 64 : 32} .modinfo`, () => {
    const info = readModInfo(makeElf(is64, EXT4_INFO), "ext4.ko");
    assert.equal(info.name, "ext4");
    assert.deepEqual(info.depends, ["jbd2", "mbcache", "crc16"]);
    assert.deepEqual(info.fields.get("alias"), ["fs-ext4", "ext3"]);
    assert.deepEqual(info.fields.get("softdep"), ["pre: crypto-crc32c"]);
  });
}

test("empty depends and dashed names are canonicalized", () => {
  const info = readModInfo(makeElf(false, "depends=\0name=ne2k-pci\0"), "ne2k-pci.ko");
  assert.equal(info.name, "ne2k_pci");
  assert.deepEqual(info.depends, []);
  const t10 = readModInfo(makeElf(false, "depends=crc-t10dif,crc64-rocksoft\0name=t10_pi\0"), "t10-pi.ko");
  assert.deepEqual(t10.depends, ["crc_t10dif", "crc64_rocksoft"]);
  assert.equal(canonicalModuleName("crc64-rocksoft"), "crc64_rocksoft");
});

test("errors name the file", () => {
  assert.throws(() => readModInfo(Buffer.alloc(100), "junk.ko"), (e: unknown) => e instanceof GuestBuildError && e.code === "MODULE_INVALID" && /junk\.ko: not an ELF/.test(e.message));
  assert.throws(() => readModInfo(makeElf(false, null), "plain.o"), /plain\.o: no \.modinfo section/);
  assert.throws(() => readModInfo(makeElf(false, "depends=\0"), "noname.ko"), /no name=/);
  const truncated = makeElf(false, EXT4_INFO).subarray(0, 80);
  assert.throws(() => readModInfo(truncated, "cut.ko"), /bad section header table/);
});
