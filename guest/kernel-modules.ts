/**
 * The kernel modules the guest loads, grouped in sets that /init loads in
 * order with busybox `insmod` (no modprobe, no modules.dep: the initrd holds
 * only these modules, flat, as /lib/modules/<name>.ko).
 *
 * Load orders measured on Debian's 6.1 686 kernel (ENGINE-NOTES.md); the
 * build re-checks them against each module's `depends=` so a new kernel
 * that adds a dependency fails the build instead of the boot.
 */

import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { GuestBuildError } from "./errors.js";
import { canonicalModuleName, readModInfo } from "./modinfo.js";
import { run } from "./run.js";

export const MODULE_SETS = {
  /** virtio-net NIC (v86 `net_device: {type: "virtio"}`), PCI vendor 0x1af4. */
  "virtio-net": ["virtio", "virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "failover", "net_failover", "virtio_net"],
  /** NE2000 PCI NIC (v86 `net_device: {type: "ne2k"}`), PCI 10ec:8029. */
  ne2k: ["8390", "ne2k-pci"],
  /** IDE disk (v86 `hda`) as /dev/sda, ext4 on it. crc32c_generic: ext4's softdep for metadata checksums. */
  disk: [
    "scsi_common",
    "scsi_mod",
    "libata",
    "ata_piix",
    "ata_generic",
    "crct10dif_common",
    "crc-t10dif",
    "crc64",
    "crc64-rocksoft",
    "t10-pi",
    "sd_mod",
    "jbd2",
    "mbcache",
    "crc16",
    "crc32c_generic",
    "ext4",
  ],
} as const satisfies Record<string, readonly string[]>;

export type ModuleSetName = keyof typeof MODULE_SETS;

export interface GuestModule {
  /** Canonical name ("ne2k_pci"), also the file name in the initrd. */
  name: string;
  /** Uncompressed module bytes. */
  data: Uint8Array;
  /** Where it came from in the unpacked kernel package. */
  source: string;
  /** Its `depends=` (canonical names). */
  depends: readonly string[];
}

async function indexModuleFiles(dir: string, index: Map<string, string>): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) await indexModuleFiles(path, index);
    else if (entry.name.endsWith(".ko") || entry.name.endsWith(".ko.xz")) {
      const base = entry.name.replace(/\.ko(\.xz)?$/, "");
      const key = canonicalModuleName(base);
      // Prefer the uncompressed file if a kernel ever ships both.
      if (!index.has(key) || entry.name.endsWith(".ko")) index.set(key, path);
    }
  }
}

async function readModuleFile(path: string): Promise<Uint8Array> {
  if (!path.endsWith(".xz")) return readFile(path);
  const { stdout } = await run("xz", ["-dc", path], { failCode: "MODULE_INVALID", what: `decompressing ${path}` });
  return stdout;
}

/**
 * Finds every module of every set under `<kernelRoot>/lib/modules/<release>`,
 * decompresses `.ko.xz`, and checks that each module's `depends=` are loaded
 * earlier in its set. Returns the modules per set, in load order.
 */
export async function collectModules(kernelRoot: string, release: string): Promise<Record<ModuleSetName, GuestModule[]>> {
  const modulesDir = join(kernelRoot, "lib", "modules", release);
  const index = new Map<string, string>();
  try {
    await indexModuleFiles(modulesDir, index);
  } catch (e) {
    throw new GuestBuildError("FILE_MISSING", `kernel modules directory ${modulesDir} is unreadable`, { cause: e });
  }
  const cache = new Map<string, GuestModule>();
  const out = {} as Record<ModuleSetName, GuestModule[]>;
  for (const setName of Object.keys(MODULE_SETS) as ModuleSetName[]) {
    const loaded = new Set<string>();
    const list: GuestModule[] = [];
    for (const wanted of MODULE_SETS[setName]) {
      const name = canonicalModuleName(wanted);
      const source = index.get(name);
      if (source === undefined) {
        throw new GuestBuildError("MODULE_INVALID", `kernel ${release} has no module ${wanted} (.ko or .ko.xz) under ${modulesDir}; is it built in now?`);
      }
      let mod = cache.get(name);
      if (mod === undefined) {
        const data = await readModuleFile(source);
        const info = readModInfo(data, source);
        if (info.name !== name) throw new GuestBuildError("MODULE_INVALID", `${source} calls itself ${info.name}, expected ${name}`);
        mod = { name, data, source, depends: info.depends };
        cache.set(name, mod);
      }
      const early = mod.depends.filter((d) => !loaded.has(d));
      if (early.length > 0) {
        throw new GuestBuildError(
          "MODULE_INVALID",
          `module set ${setName}: ${wanted} depends on ${early.join(", ")}, which must be listed before it (kernel ${release})`,
        );
      }
      loaded.add(name);
      list.push(mod);
    }
    out[setName] = list;
  }
  return out;
}
