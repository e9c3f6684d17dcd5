/**
 * The guest's architecture as the image build sees it: Debian's name for
 * it, the ELF machine of its binaries, and where Debian's multiarch layout
 * puts its loader and libraries.
 */

import { EM_386 } from "./elf.js";
import type { GuestAbi } from "./shared-libraries.js";

/** The emu engine's guest: 32-bit x86 (v86 emulates a Pentium III-class CPU, no PAE). */
export const I386_ABI: GuestAbi = {
  arch: "i386",
  machine: EM_386,
  // Debian multiarch tuple i386-linux-gnu (libc6:i386), then the plain dirs.
  libDirs: ["lib/i386-linux-gnu", "usr/lib/i386-linux-gnu", "lib", "usr/lib"],
};
