/**
 * The x86 Linux boot protocol's bzImage, read as a file (never run): the
 * real-mode setup header and the compressed kernel it carries.
 *
 * Layout (linux/Documentation/arch/x86/boot.rst, "The Real-Mode Kernel
 * Header" and "Details of Header Fields"):
 *
 *   0x1f1  setup_sects     u8   512-byte setup sectors after the boot sector (0 means 4)
 *   0x1fe  boot_flag       u16  0xAA55
 *   0x202  header          u32  "HdrS"
 *   0x206  version         u16  boot protocol version (major << 8 | minor)
 *   0x248  payload_offset  u32  protocol 2.08+: the payload's offset from the start
 *                               of the protected-mode code, which is at (setup_sects + 1) * 512
 *   0x24c  payload_length  u32  protocol 2.08+: the payload's length
 *
 * The payload is the compressed vmlinux (an ELF file, with the
 * relocations appended when the kernel is relocatable), followed by the
 * uncompressed size as 4 little-endian bytes (arch/x86/boot/compressed/
 * Makefile, `size_append`; the kernel's own decompressor reads it as
 * z_output_len). Its format is named by its first bytes.
 */

import { GuestBuildError } from "./errors.js";

const SETUP_SECTS = 0x1f1;
const BOOT_FLAG = 0x1fe;
const BOOT_FLAG_MAGIC = 0xaa55;
const HEADER = 0x202;
const HEADER_MAGIC = "HdrS";
const VERSION = 0x206;
const PAYLOAD_OFFSET = 0x248;
const PAYLOAD_LENGTH = 0x24c;
/** payload_offset and payload_length exist from boot protocol 2.08 on. */
const MIN_PAYLOAD_VERSION = 0x0208;
const SECTOR = 512;
/** The trailing uncompressed-size word. */
const SIZE_APPEND = 4;

/** The compression formats a kernel payload may have (linux/arch/x86/Kconfig KERNEL_*), by magic. */
export const PAYLOAD_MAGICS: ReadonlyArray<{ format: PayloadFormat; magic: readonly number[] }> = [
  { format: "gzip", magic: [0x1f, 0x8b] },
  { format: "bzip2", magic: [0x42, 0x5a, 0x68] }, // "BZh"
  { format: "lzma", magic: [0x5d, 0x00, 0x00] },
  { format: "xz", magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00] }, // FD "7zXZ" 00
  { format: "lzo", magic: [0x89, 0x4c, 0x5a, 0x4f] }, // 89 "LZO"
  { format: "lz4", magic: [0x02, 0x21, 0x4c, 0x18] }, // the legacy LZ4 frame the kernel uses
  { format: "zstd", magic: [0x28, 0xb5, 0x2f, 0xfd] },
];

export type PayloadFormat = "gzip" | "bzip2" | "lzma" | "xz" | "lzo" | "lz4" | "zstd";

export interface BzImagePayload {
  /** Boot protocol version, "2.15". */
  protocol: string;
  /** File offset of the protected-mode code ((setup_sects + 1) * 512). */
  protectedModeOffset: number;
  /** File offset of the payload. */
  offset: number;
  /** The payload, without the trailing size word. */
  compressed: Uint8Array;
  /** The uncompressed size the kernel's build appended to the payload. */
  uncompressedSize: number;
  /** The format its magic names, or undefined when it is none of PAYLOAD_MAGICS. */
  format: PayloadFormat | undefined;
}

/** The compression format whose magic `data` starts with. */
export function payloadFormat(data: Uint8Array): PayloadFormat | undefined {
  return PAYLOAD_MAGICS.find(({ magic }) => data.length >= magic.length && magic.every((b, i) => data[i] === b))?.format;
}

/** Reads the setup header of the bzImage `bytes` and returns its payload; `what` names the file in errors. */
export function readBzImagePayload(bytes: Uint8Array, what: string): BzImagePayload {
  const fail = (why: string): GuestBuildError => new GuestBuildError("KERNEL_INVALID", `${what}: ${why}`);
  if (bytes.length < PAYLOAD_LENGTH + 4) throw fail(`${bytes.length} bytes: too short for a bzImage setup header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = Buffer.from(bytes.buffer, bytes.byteOffset + HEADER, 4).toString("latin1");
  if (magic !== HEADER_MAGIC || view.getUint16(BOOT_FLAG, true) !== BOOT_FLAG_MAGIC) {
    throw fail(`not a bzImage (no "${HEADER_MAGIC}" at 0x${HEADER.toString(16)} or boot flag 0x${BOOT_FLAG_MAGIC.toString(16)} at 0x${BOOT_FLAG.toString(16)})`);
  }
  const version = view.getUint16(VERSION, true);
  const protocol = `${version >> 8}.${String(version & 0xff).padStart(2, "0")}`;
  if (version < MIN_PAYLOAD_VERSION) throw fail(`boot protocol ${protocol} has no payload_offset/payload_length (2.08 or later needed)`);
  const setupSects = bytes[SETUP_SECTS] === 0 ? 4 : (bytes[SETUP_SECTS] as number);
  const protectedModeOffset = (setupSects + 1) * SECTOR;
  const offset = protectedModeOffset + view.getUint32(PAYLOAD_OFFSET, true);
  const length = view.getUint32(PAYLOAD_LENGTH, true);
  if (length <= SIZE_APPEND || offset + length > bytes.length) {
    throw fail(`payload of ${length} bytes at offset ${offset} (setup_sects ${setupSects}) does not fit in the file's ${bytes.length} bytes`);
  }
  const payload = bytes.subarray(offset, offset + length);
  const compressed = payload.subarray(0, length - SIZE_APPEND);
  const uncompressedSize = new DataView(payload.buffer, payload.byteOffset + length - SIZE_APPEND, SIZE_APPEND).getUint32(0, true);
  return { protocol, protectedModeOffset, offset, compressed, uncompressedSize, format: payloadFormat(compressed) };
}
