/**
 * The uncompressed kernel the qemu engine boots: the ELF vmlinux inside a
 * Debian bzImage, entered through its Xen PVH entry point (QEMU `-kernel
 * vmlinux` loads an ELF kernel with that note as a PVH guest: no real-mode
 * setup, no decompression in the guest; ENGINE-NOTES.md measured 2.6-3.3 s
 * to userspace under TCG against 7.8-8.9 s for the bzImage).
 *
 * Extracted without running guest code: the payload is found through the
 * bzImage's setup header (bzimage.ts) and decompressed by the host's `xz`
 * (Debian builds its amd64 kernel with CONFIG_KERNEL_XZ=y); the result must
 * be an x86-64 ELF file whose PT_NOTE holds XEN_ELFNOTE_PHYS32_ENTRY
 * (Debian: CONFIG_PVH=y).
 */

import { readBzImagePayload } from "./bzimage.js";
import { ELFCLASS64, EM_X86_64, ElfFile } from "./elf.js";
import { GuestBuildError } from "./errors.js";
import { run } from "./run.js";

/** linux/include/xen/interface/elfnote.h: the 32-bit physical entry point of a PVH kernel. */
export const XEN_ELFNOTE_PHYS32_ENTRY = 18;
/** The owner of Xen's notes. */
export const XEN_NOTE_NAME = "Xen";

/**
 * The PVH entry point of a kernel ELF file: the descriptor of its "Xen"
 * note of type XEN_ELFNOTE_PHYS32_ENTRY (a 32-bit physical address; the
 * kernel declares it with _ASM_PTR, 8 bytes on x86-64). Undefined when the
 * file has no such note.
 */
export function pvhEntry(elf: ElfFile): number | undefined {
  const note = elf.notes().find((n) => n.name === XEN_NOTE_NAME && n.type === XEN_ELFNOTE_PHYS32_ENTRY);
  if (note === undefined) return undefined;
  const d = new DataView(note.desc.buffer, note.desc.byteOffset, note.desc.byteLength);
  if (note.desc.length === 4) return d.getUint32(0, true);
  if (note.desc.length === 8 && d.getUint32(4, true) === 0) return d.getUint32(0, true);
  throw elf.fail(`Xen note ${XEN_ELFNOTE_PHYS32_ENTRY} (PHYS32_ENTRY) has a ${note.desc.length}-byte descriptor, not a 32-bit address`);
}

export interface PvhKernel {
  /** The ELF vmlinux (with whatever the payload appends after it, as the kernel's decompressor sees it). */
  vmlinux: Buffer;
  /** Its PVH entry point (physical address). */
  entry: number;
  /** The bzImage's boot protocol version ("2.15"). */
  protocol: string;
}

/**
 * The vmlinux inside the bzImage `bzImage`, checked to be an x86-64 ELF
 * kernel with a PVH entry. `what` names the kernel in errors
 * ("linux-image-6.1.0-57-amd64 6.1.192-3 boot/vmlinuz-6.1.0-57-amd64").
 * A payload compressed otherwise than with xz fails naming its format.
 */
export async function extractPvhVmlinux(bzImage: Uint8Array, what: string): Promise<PvhKernel> {
  const payload = readBzImagePayload(bzImage, what);
  if (payload.format !== "xz") {
    const name = payload.format ?? `an unknown format (first bytes ${Buffer.from(payload.compressed.subarray(0, 6)).toString("hex")})`;
    throw new GuestBuildError("KERNEL_INVALID", `${what}: the kernel payload is compressed with ${name}; the builder extracts vmlinux from xz payloads only (CONFIG_KERNEL_XZ)`);
  }
  // xz is a host tool (Debian's xz-utils): it reads bytes, it runs no guest code.
  const { stdout } = await run("xz", ["--decompress", "--stdout", "--single-stream"], {
    input: payload.compressed,
    failCode: "KERNEL_INVALID",
    what: `decompressing the xz payload of ${what}`,
  });
  if (stdout.length !== payload.uncompressedSize) {
    throw new GuestBuildError("KERNEL_INVALID", `${what}: the payload decompressed to ${stdout.length} bytes, its size word says ${payload.uncompressedSize}`);
  }
  const elf = new ElfFile(stdout, `${what}: the vmlinux in its payload`, "KERNEL_INVALID");
  if (elf.class !== ELFCLASS64 || elf.machine !== EM_X86_64) throw elf.fail(`ELF class ${elf.class}, machine ${elf.machine}: not an x86-64 kernel`);
  const entry = pvhEntry(elf);
  if (entry === undefined) {
    throw elf.fail(`no Xen PVH entry note (PT_NOTE "${XEN_NOTE_NAME}" type ${XEN_ELFNOTE_PHYS32_ENTRY}, XEN_ELFNOTE_PHYS32_ENTRY): the kernel was built without CONFIG_PVH and QEMU cannot boot it as vmlinux`);
  }
  return { vmlinux: stdout, entry, protocol: payload.protocol };
}
