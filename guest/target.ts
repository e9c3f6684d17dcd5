/**
 * The guests the builder makes, one description each: everything that
 * differs between the `emu` engine's i386 guest and the `qemu` engine's
 * x86-64 guest is here, and the rest of the builder (apt.ts,
 * package-set.ts, kernel-modules.ts, initrd-tree.ts, build.ts) takes a
 * GuestTarget instead of knowing an architecture.
 *
 * - Debian architecture and ABI: ELF machine, multiarch library directories
 *   the loader searches (Debian's ld.so looks in the multiarch directories
 *   first; the x86-64 loader itself lives in lib/x86_64-linux-gnu, reached
 *   through the PT_INTERP path /lib64/ld-linux-x86-64.so.2, a link);
 * - kernel: the metapackage naming the current `linux-image-<release>-<flavour>`
 *   and how the engine boots it (the bzImage, or the uncompressed vmlinux
 *   through its PVH entry, extracted by vmlinux.ts);
 * - kernel module sets: the names the guest needs per device, the load
 *   order computed from the kernel (kernel-modules.ts);
 * - the data disk's device node and the cache directory.
 */

import { EM_386, EM_X86_64 } from "./elf.js";
import { GuestBuildError } from "./errors.js";
import type { GuestDataDevice } from "./contract.js";
import type { GuestAbi } from "./shared-libraries.js";

/** The module sets /init knows (guest/init.sh loads each one whose list exists in /etc/colo/modules). */
export type ModuleSetName = "virtio-net" | "ne2k" | "disk";
export const MODULE_SET_NAMES: readonly ModuleSetName[] = ["virtio-net", "ne2k", "disk"];

export type ModuleSets = Readonly<Partial<Record<ModuleSetName, readonly string[]>>>;

/**
 * How the engine boots the kernel:
 * - `bzImage`: the package's vmlinuz as it is (v86 runs its real-mode setup);
 * - `pvh-vmlinux`: the ELF vmlinux inside the bzImage, entered at its Xen
 *   PVH entry point (QEMU `-kernel vmlinux`: no real-mode setup, no
 *   decompression; ~2x faster to userspace under TCG, ENGINE-NOTES.md).
 *   The build writes both `vmlinuz` and `vmlinux`.
 */
export type KernelForm = "bzImage" | "pvh-vmlinux";

export type GuestArch = "i386" | "amd64";

export interface GuestTarget {
  /** Debian architecture of every package ("amd64"); also the manifest's `arch`. */
  arch: GuestArch;
  /** The engine this guest is for. */
  engine: "emu" | "qemu";
  abi: GuestAbi;
  kernel: {
    /** Metapackage whose Depends names the current kernel image package. */
    metapackage: string;
    /** Debian's kernel flavour ("686", "amd64"), for messages. */
    flavour: string;
    /** `linux-image-<release>` → capture 1 is the release (`uname -r`). */
    imagePattern: RegExp;
    form: KernelForm;
  };
  /** Module set → module names (not their dependencies: those are computed). */
  moduleSets: ModuleSets;
  /** The data disk as the guest sees it (one of GUEST_DATA_DEVICES in contract.ts). */
  dataDevice: GuestDataDevice;
  /** Cache directory name under `<repo>/.cache`. */
  cacheDirName: string;
}

/** The emu engine's guest: 32-bit x86 (v86 emulates a Pentium III-class CPU without PAE). */
export const I386_TARGET: GuestTarget = {
  arch: "i386",
  engine: "emu",
  abi: {
    arch: "i386",
    machine: EM_386,
    // Debian multiarch tuple i386-linux-gnu (libc6:i386), then the plain dirs.
    libDirs: ["lib/i386-linux-gnu", "usr/lib/i386-linux-gnu", "lib", "usr/lib"],
  },
  kernel: {
    metapackage: "linux-image-686",
    flavour: "686",
    // "-686-pae" does not match: v86 has no PAE.
    imagePattern: /^linux-image-(\d+\.\d+\.\d+-\d+-686)$/,
    form: "bzImage",
  },
  // Key order and contents are hashed into the manifest: keep them stable.
  moduleSets: {
    /**
     * virtio-net NIC (v86 `net_device: {type: "virtio"}`, PCI vendor 0x1af4):
     * the driver and its PCI transport (virtio_pci is not a `depends=` of
     * virtio_net: it binds the PCI function the driver then uses).
     */
    "virtio-net": ["virtio_pci", "virtio_net"],
    /** NE2000 PCI NIC (v86 `net_device: {type: "ne2k"}`), PCI 10ec:8029. */
    ne2k: ["ne2k-pci"],
    /**
     * The IDE disk (v86 `hda`) as /dev/sda, ext4 on it: the PIIX and generic
     * ATA host drivers, the SCSI disk driver, ext4. ext4's metadata checksums
     * come from its `softdep=pre:` (crc32c), resolved like any dependency.
     */
    disk: ["ata_piix", "ata_generic", "sd_mod", "ext4"],
  },
  dataDevice: "/dev/sda",
  cacheDirName: "guest",
};

/** The qemu engine's guest: x86-64, virtio devices on PCI (QEMU `-machine pc`). */
export const AMD64_TARGET: GuestTarget = {
  arch: "amd64",
  engine: "qemu",
  abi: {
    arch: "amd64",
    machine: EM_X86_64,
    // Multiarch dirs first (Debian's ld.so order), then lib64 where the PT_INTERP link lives.
    libDirs: ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64", "lib", "usr/lib"],
  },
  kernel: {
    metapackage: "linux-image-amd64",
    flavour: "amd64",
    imagePattern: /^linux-image-(\d+\.\d+\.\d+-\d+-amd64)$/,
    form: "pvh-vmlinux",
  },
  moduleSets: {
    /** virtio-net-pci: the driver and its PCI transport, as for i386. */
    "virtio-net": ["virtio_pci", "virtio_net"],
    /**
     * virtio-blk-pci as /dev/vda, ext4 on it. virtio_pci again: virtio_blk
     * does not depend on it, but without the transport no virtio device
     * binds (a guest with a disk and no virtio NIC); /init skips a module
     * already loaded by the NIC set.
     */
    disk: ["virtio_pci", "virtio_blk", "ext4"],
  },
  dataDevice: "/dev/vda",
  cacheDirName: "guest-amd64",
};

/** Every target, in the order `colo image build --arch all` builds them. */
export const GUEST_TARGETS: readonly GuestTarget[] = [I386_TARGET, AMD64_TARGET];

/** The target of a Debian architecture name; fails naming the ones there are. */
export function guestTarget(arch: string): GuestTarget {
  const t = GUEST_TARGETS.find((x) => x.arch === arch);
  if (t === undefined) throw new GuestBuildError("INVALID_OPTION", `no guest for architecture "${arch}" (there are: ${GUEST_TARGETS.map((x) => x.arch).join(", ")})`);
  return t;
}
