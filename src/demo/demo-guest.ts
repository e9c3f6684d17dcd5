/**
 * The demo's guest per engine: the image `colo image build` made for it
 * (emu: the i386 bzImage; qemu: the amd64 vmlinux booted through PVH, with
 * virtio devices), its RAM, and the config lines that differ.
 */
import type { EngineName } from "../config/engines.js";
import { guestImagePaths } from "../../guest/build.js";

/** The engine `colo demo` runs on when --engine is not given (docs/engines.md "Choosing"). */
export const DEFAULT_DEMO_ENGINE: EngineName = "qemu";

export interface DemoGuest {
  kernel: string;
  initrd: string;
  memoryMiB: number;
  /** Config lines for the engine (engine=, and what it needs). */
  engineLines: string[];
}

export function demoGuest(engine: EngineName): DemoGuest {
  if (engine === "qemu") {
    const p = guestImagePaths("amd64");
    return { kernel: p.bootKernel, initrd: p.initrd, memoryMiB: 256, engineLines: [`engine = "qemu"`, `accel = "auto"`] };
  }
  const p = guestImagePaths("i386");
  return { kernel: p.bootKernel, initrd: p.initrd, memoryMiB: 160, engineLines: [`engine = "emu"`] };
}
