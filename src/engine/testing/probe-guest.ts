/**
 * A hand-made Multiboot guest for engine tests: 75 bytes of 32-bit code that
 * prints "R" on COM1, then for every byte b received on COM1 increments the
 * first byte of page (PROBE_PAGE_BASE + b) and prints "K". It uses no stack,
 * no interrupts and no BIOS, so the only RAM it writes is the page it was
 * asked to: the ground truth for dirty-page tracking tests.
 *
 * Three bytes are commands instead (PROBE_COMMAND), the ways a guest stops:
 * HALT runs `cli; hlt` (what Linux's halt and poweroff end in without a
 * power-off device), RESET writes 0xFE to the keyboard controller (Linux's
 * reboot) and goes back to reading bytes (so a guest that was not stopped
 * answers the next byte), FAULT loads an empty IDT and raises int3 (a triple
 * fault on hardware; v86 fails on it).
 */

/** Multiboot spec 0.6.96 §3.1.1: header magic; flag 16 = the address fields are valid. */
const MULTIBOOT_HEADER_MAGIC = 0x1badb002;
const MULTIBOOT_AOUT_KLUDGE = 1 << 16;

/** Physical load address of the image (1 MiB, above legacy memory). */
export const PROBE_LOAD_ADDRESS = 0x100000;
/** Pages the guest writes: 0x200 + received byte (2 MiB + byte * 4 KiB). */
export const PROBE_PAGE_BASE = 0x200;

/** Bytes that make the probe stop instead of writing a page (see above). */
export const PROBE_COMMAND = { HALT: 0xf0, RESET: 0xf1, FAULT: 0xf2 } as const;

const HEADER_BYTES = 32;

/** Offset in CODE of the 6-byte IDT descriptor (limit 0, base 0) the FAULT command loads. */
const EMPTY_IDT_OFFSET = 69;
const EMPTY_IDT_ADDRESS = PROBE_LOAD_ADDRESS + HEADER_BYTES + EMPTY_IDT_OFFSET;

const u32 = (n: number): number[] => [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];

// 16550 UART registers (COM1 at 0x3f8): data at +0, line status at +5 (bit 0: data ready).
// Offsets in CODE on the left; jumps are relative to the next instruction.
const CODE = [
  /*  0 */ 0x66, 0xba, 0xf8, 0x03, //        mov dx, 0x3f8
  /*  4 */ 0xb0, 0x52, //                    mov al, 'R'
  /*  6 */ 0xee, //                          out dx, al
  // loop:
  /*  7 */ 0x66, 0xba, 0xfd, 0x03, //        mov dx, 0x3fd
  // wait:
  /* 11 */ 0xec, //                          in al, dx
  /* 12 */ 0xa8, 0x01, //                    test al, 1
  /* 14 */ 0x74, 0xfb, //                    jz wait
  /* 16 */ 0x66, 0xba, 0xf8, 0x03, //        mov dx, 0x3f8
  /* 20 */ 0xec, //                          in al, dx
  /* 21 */ 0x3c, PROBE_COMMAND.HALT, //      cmp al, HALT
  /* 23 */ 0x74, 0x1a, //                    je halt
  /* 25 */ 0x3c, PROBE_COMMAND.RESET, //     cmp al, RESET
  /* 27 */ 0x74, 0x1a, //                    je reset
  /* 29 */ 0x3c, PROBE_COMMAND.FAULT, //     cmp al, FAULT
  /* 31 */ 0x74, 0x1c, //                    je fault
  /* 33 */ 0x0f, 0xb6, 0xc0, //              movzx eax, al
  /* 36 */ 0xc1, 0xe0, 0x0c, //              shl eax, 12
  /* 39 */ 0x05, 0x00, 0x00, 0x20, 0x00, //  add eax, 0x200000
  /* 44 */ 0xfe, 0x00, //                    inc byte [eax]
  /* 46 */ 0xb0, 0x4b, //                    mov al, 'K'
  /* 48 */ 0xee, //                          out dx, al
  /* 49 */ 0xeb, 0xd4, //                    jmp loop
  // halt:
  /* 51 */ 0xfa, //                          cli
  /* 52 */ 0xf4, //                          hlt
  /* 53 */ 0xeb, 0xfd, //                    jmp 52
  // reset:
  /* 55 */ 0xb0, 0xfe, //                    mov al, 0xfe (pulse reset)
  /* 57 */ 0xe6, 0x64, //                    out 0x64, al
  /* 59 */ 0xeb, 0xca, //                    jmp loop
  // fault:
  /* 61 */ 0x0f, 0x01, 0x1d, ...u32(EMPTY_IDT_ADDRESS), // lidt [empty_idt]
  /* 68 */ 0xcc, //                          int3
  /* 69 */ 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // empty_idt: limit 0, base 0
];

export function probeGuestImage(): Uint8Array {
  if (CODE.length !== EMPTY_IDT_OFFSET + 6) throw new Error(`probe guest: ${CODE.length} bytes of code, but the IDT descriptor is placed for ${EMPTY_IDT_OFFSET + 6}`);
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
