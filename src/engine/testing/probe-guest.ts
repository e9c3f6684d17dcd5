/**
 * A hand-made Multiboot guest for engine tests: 70 bytes of 32-bit code that
 * prints "R" on COM1, then for every byte b received on COM1 increments the
 * first byte of page (PROBE_PAGE_BASE + b) and prints "K". It uses no stack,
 * no interrupts and no BIOS, so the only RAM it writes is the page it was
 * asked to: the ground truth for dirty-page tracking tests.
 */

/** Multiboot spec 0.6.96 §3.1.1: header magic; flag 16 = the address fields are valid. */
const MULTIBOOT_HEADER_MAGIC = 0x1badb002;
const MULTIBOOT_AOUT_KLUDGE = 1 << 16;

/** Physical load address of the image (1 MiB, above legacy memory). */
export const PROBE_LOAD_ADDRESS = 0x100000;
/** Pages the guest writes: 0x200 + received byte (2 MiB + byte * 4 KiB). */
export const PROBE_PAGE_BASE = 0x200;

const HEADER_BYTES = 32;

// 16550 UART registers (COM1 at 0x3f8): data at +0, line status at +5 (bit 0: data ready).
const CODE = [
  0x66, 0xba, 0xf8, 0x03, //        mov dx, 0x3f8
  0xb0, 0x52, //                    mov al, 'R'
  0xee, //                          out dx, al
  // loop:
  0x66, 0xba, 0xfd, 0x03, //        mov dx, 0x3fd
  // wait:
  0xec, //                          in al, dx
  0xa8, 0x01, //                    test al, 1
  0x74, 0xfb, //                    jz wait
  0x66, 0xba, 0xf8, 0x03, //        mov dx, 0x3f8
  0xec, //                          in al, dx
  0x0f, 0xb6, 0xc0, //              movzx eax, al
  0xc1, 0xe0, 0x0c, //              shl eax, 12
  0x05, 0x00, 0x00, 0x20, 0x00, //  add eax, 0x200000
  0xfe, 0x00, //                    inc byte [eax]
  0xb0, 0x4b, //                    mov al, 'K'
  0xee, //                          out dx, al
  0xeb, 0xe0, //                    jmp loop
];

export function probeGuestImage(): Uint8Array {
  const image = new Uint8Array(HEADER_BYTES + CODE.length);
  const view = new DataView(image.buffer);
  const flags = MULTIBOOT_AOUT_KLUDGE;
  view.setUint32(0, MULTIBOOT_HEADER_MAGIC, true);
  view.setUint32(4, flags, true);
  view.setUint32(8, (-(MULTIBOOT_HEADER_MAGIC + flags)) >>> 0, true);
  view.setUint32(12, PROBE_LOAD_ADDRESS, true); // header_addr
  view.setUint32(16, PROBE_LOAD_ADDRESS, true); // load_addr
  view.setUint32(20, 0, true); // load_end_addr: 0 = the whole file
  view.setUint32(24, 0, true); // bss_end_addr: no bss
  view.setUint32(28, PROBE_LOAD_ADDRESS + HEADER_BYTES, true); // entry_addr
  image.set(CODE, HEADER_BYTES);
  return image;
}
