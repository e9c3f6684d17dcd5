import { test } from "node:test";
import assert from "node:assert/strict";
import { canonicalModuleName, parseSoftdepPre, readModInfo } from "./modinfo.js";
import { GuestBuildError } from "./errors.js";
import { makeModuleElf as makeElf } from "./elf-testing.js";

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

test("softdep pre: names and aliases are read and canonicalized", () => {
  const info = readModInfo(makeElf(true, EXT4_INFO), "ext4.ko");
  assert.deepEqual(info.softdepsPre, ["crypto_crc32c"]);
  assert.deepEqual(info.aliases, ["fs_ext4", "ext3"]);
  assert.deepEqual(parseSoftdepPre(["pre: a-b c post: d", "post: e pre: f"]), ["a_b", "c", "f"]);
  assert.deepEqual(parseSoftdepPre([]), []);
});
