/**
 * A parsed, validated VM configuration (xl.cfg syntax, see docs/config.md).
 * Paths are absolute (resolved against the config file's folder).
 */

import type { AccelName, EngineName } from "./engines.js";

export type { AccelName, EngineName } from "./engines.js";

/** Where a value came from, for error messages: "guest.cfg:12". */
export interface SourceLocation {
  file: string;
  line: number;
}

/**
 * `on_poweroff=`, `on_reboot=`, `on_crash=`: what the daemon does when the
 * guest stops (xl.cfg(5) semantics; docs/config.md "Lifecycle").
 */
export type LifecycleAction =
  /** End the VM (the `colo` process for it exits). */
  | "destroy"
  /** Boot the VM again from its kernel, with the same config, in the same `colo` process. */
  | "restart"
  /** Keep the stopped VM (paused, status and console readable) until an operator destroys it. */
  | "preserve";

/** IDE device ids: hda primary master, hdb primary slave, hdc secondary master, hdd secondary slave. */
export type IdeVdev = "hda" | "hdb" | "hdc" | "hdd";

/** `model=` of a vif: the emulated NIC. */
export type NicModel = "virtio" | "ne2k";

/** The seed's COLO disk keys (COLO-PROTOCOL.md §2, §7); used by disk replication. */
export interface ColoDiskOptions {
  /** `colo-host=`: the secondary's address for the disk channel (IPv4, IPv6 or host name). */
  host: string;
  /** `colo-port=`: the secondary's disk-channel port (1..65535). */
  port: number;
  /** `colo-export=`: the name the secondary exports this disk under. */
  exportName: string;
  /** `active-disk=`: file holding the SVM's own writes since the last checkpoint (absolute path). */
  activeDisk: string;
  /** `hidden-disk=`: file holding the PVM's pending writes since the last checkpoint (absolute path). */
  hiddenDisk: string;
}

export interface DiskConfig {
  /** `target=`: the raw image file (absolute path; existence is checked by the VM layer at start). */
  target: string;
  format: "raw";
  /** `vdev=`: the IDE slot; hda is the first disk (the guest sees /dev/sda). */
  vdev: IdeVdev;
  access: "rw" | "ro";
  colo?: ColoDiskOptions;
  at: SourceLocation;
}

export interface VifConfig {
  /**
   * `mac=`: six octets, unicast. When absent: generated deterministically from
   * the VM name and the vif's index under Xen's OUI 00:16:3e, so the PVM and
   * SVM of one VM get the same MAC.
   */
  mac: Uint8Array;
  /** `model=`: the emulated NIC; default "virtio". */
  model: NicModel;
  /** `bridge=`: the host bridge the VM's TAP joins; absent: the TAP joins no bridge. */
  bridge?: string;
  /** `ip=`: the guest's IPv4 address, always with a prefix, e.g. "10.77.0.10/24" (default prefix /24). */
  ip?: string;
  /** `gatewayip=`: the guest's default gateway (IPv4, no prefix). */
  gateway?: string;
  /** `forwarddev=`: the host NIC that carries mirrored/redirected frames (COLO proxy). */
  forwarddev?: string;
  at: SourceLocation;
}

export interface VmConfig {
  name: string;
  /** `memory=` in MiB. */
  memoryMiB: number;
  vcpus: 1;
  /** `engine=`: one of ENGINE_NAMES (engines.ts); default "emu". */
  engine: EngineName;
  /** `accel=` (engine qemu only): default "auto". */
  accel: AccelName;
  kernel: string;
  ramdisk?: string;
  /**
   * `extra=` / `cmdline=`: the kernel command line as written (default "").
   * The VM layer boots with guestCmdline(config), which adds colo.ip= from the vif.
   */
  cmdline: string;
  /** Sorted by vdev (hda first); at most 4. */
  disks: DiskConfig[];
  /** At most 1 for now. */
  vifs: VifConfig[];
  /** `on_poweroff=`: default "destroy". */
  onPoweroff: LifecycleAction;
  /** `on_reboot=`: default "restart". */
  onReboot: LifecycleAction;
  /** `on_crash=`: default "destroy". */
  onCrash: LifecycleAction;
  /** The config file itself (absolute path). */
  source: string;
}
