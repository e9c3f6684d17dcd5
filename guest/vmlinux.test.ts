import { test } from "node:test";
import assert from "node:assert/strict";
import { makeBzImage } from "./bzimage-testing.js";
import { EM_386, ElfFile } from "./elf.js";
import { makeDynamicElf, makeNoteElf } from "./elf-testing.js";
import { GuestBuildError } from "./errors.js";
import { run } from "./run.js";
import { XEN_ELFNOTE_PHYS32_ENTRY, extractPvhVmlinux, pvhEntry } from "./vmlinux.js";

/** Compresses with the host's xz, as the kernel's build does (crc32 check, x86 BCJ filter). */
async function xz(data: Uint8Array): Promise<Buffer> {
  return (await run("xz", ["--compress", "--stdout", "--check=crc32", "--x86", "--lzma2=preset=6"], { input: data })).stdout;
}

function entryDesc(entry: number, bytes: 4 | 8): Buffer {
  const b = Buffer.alloc(bytes);
  b.writeUInt32LE(entry);
  return b;
}

/** A vmlinux shaped like Linux's: a GNU build-id note, Xen notes (the PVH entry among them), the relocations appended. */
function syntheticVmlinux(withPvh: boolean): Buffer {
  return makeNoteElf(
    [
      { name: "GNU", type: 3, desc: Buffer.from("0123456789abcdef0123", "latin1") },
      { name: "Xen", type: 6, desc: Buffer.from("linux\0", "latin1") }, // XEN_ELFNOTE_GUEST_OS
      ...(withPvh ? [{ name: "Xen", type: XEN_ELFNOTE_PHYS32_ENTRY, desc: entryDesc(0x1000a20, 8) }] : []),
      { name: "Linux", type: 0x100, desc: Buffer.alloc(4) },
    ],
    { trailer: Buffer.alloc(4096, 0xa5) },
  );
}

test("ELF notes: name, type and descriptor of each, 4- and 8-byte alignment", () => {
  for (const align of [4, 8] as const) {
    const elf = new ElfFile(makeNoteElf([{ name: "GNU", type: 3, desc: Buffer.from([1, 2, 3]) }, { name: "Xen", type: 18, desc: entryDesc(0x1234, 4) }], { align }), "k");
    const notes = elf.notes();
    assert.deepEqual(notes.map((n) => [n.name, n.type, Buffer.from(n.desc).toString("hex")]), [["GNU", 3, "010203"], ["Xen", 18, "34120000"]]);
    assert.equal(pvhEntry(elf), 0x1234);
  }
  assert.deepEqual(new ElfFile(makeDynamicElf({ needed: ["libc.so.6"] }), "prog").notes(), [], "no PT_NOTE, no notes");
  const wide = new ElfFile(makeNoteElf([{ name: "Xen", type: 18, desc: Buffer.alloc(16, 1) }]), "k");
  assert.throws(() => pvhEntry(wide), /16-byte descriptor, not a 32-bit address/);
});

test("the vmlinux comes out of a synthetic bzImage's xz payload byte for byte, with its PVH entry", async () => {
  const vmlinux = syntheticVmlinux(true);
  const image = makeBzImage({ payload: await xz(vmlinux), uncompressedSize: vmlinux.length });
  const k = await extractPvhVmlinux(image, "linux-image-test vmlinuz");
  assert.ok(k.vmlinux.equals(vmlinux));
  assert.equal(k.entry, 0x1000a20);
  assert.equal(k.protocol, "2.15");
});

test("no PVH note, another compression, a wrong size word, a 32-bit kernel: the build fails saying which", async () => {
  const fails = async (image: Buffer, re: RegExp): Promise<void> =>
    assert.rejects(extractPvhVmlinux(image, "vmlinuz-x"), (e: unknown) => e instanceof GuestBuildError && e.code === "KERNEL_INVALID" && re.test(e.message));
  const noPvh = syntheticVmlinux(false);
  await fails(makeBzImage({ payload: await xz(noPvh), uncompressedSize: noPvh.length }), /vmlinuz-x: the vmlinux in its payload: no Xen PVH entry note \(PT_NOTE "Xen" type 18/);
  await fails(makeBzImage({ payload: Buffer.from("1f8b08000000000000ff", "hex") }), /compressed with gzip; the builder extracts vmlinux from xz payloads only/);
  await fails(makeBzImage({ payload: Buffer.from("28b52ffd0400", "hex") }), /compressed with zstd/);
  await fails(makeBzImage({ payload: Buffer.from("02214c18aa", "hex") }), /compressed with lz4/);
  await fails(makeBzImage({ payload: Buffer.from("00112233445566", "hex") }), /an unknown format \(first bytes 001122334455\)/);
  const good = syntheticVmlinux(true);
  await fails(makeBzImage({ payload: await xz(good), uncompressedSize: good.length + 1 }), /decompressed to \d+ bytes, its size word says \d+/);
  await fails(makeBzImage({ payload: Buffer.from("fd377a585a00deadbeef", "hex") }), /decompressing the xz payload of vmlinuz-x/);
  const i386 = makeNoteElf([{ name: "Xen", type: 18, desc: entryDesc(0x100000, 4) }], { machine: EM_386 });
  await fails(makeBzImage({ payload: await xz(i386), uncompressedSize: i386.length }), /machine 3: not an x86-64 kernel/);
});
