/**
 * A parsed, validated VM configuration (xl.cfg syntax, see docs/config.md).
 * Paths are absolute (resolved against the config file's folder).
 */

/** Where a value came from, for error messages: "guest.cfg:12". */
export interface SourceLocation {
  file: string;
  line: number;
}

/** The seed's COLO disk keys (COLO-PROTOCOL.md §2, §7); used by disk replication. */
export interface ColoDiskOptions {
  /** `colo-host=`: the secondary's address for the disk channel. */
  host: string;
  /** `colo-port=`: the secondary's disk-channel port. */
  port: number;
  /** `colo-export=`: the name the secondary exports this disk under. */
  exportName: string;
  /** `active-disk=`: file holding the SVM's own writes since the last checkpoint. */
  activeDisk: string;
  /** `hidden-disk=`: file holding the PVM's pending writes since the last checkpoint. */
  hiddenDisk: string;
}

export interface DiskConfig {
  /** `target=`: the raw image file. */
  target: string;
  format: "raw";
  /** `vdev=`: hda (the first IDE disk; the guest sees /dev/sda). */
  vdev: string;
  access: "rw" | "ro";
  colo?: ColoDiskOptions;
  at: SourceLocation;
}

export interface VifConfig {
  /** `mac=`: six octets. Generated (locally administered, 00:16:3e prefix like Xen) when absent. */
  mac: Uint8Array;
  /** `bridge=`: the host bridge the VM's TAP joins. */
  bridge?: string;
  /** `ip=`: the guest's address with prefix, e.g. 10.77.0.10/24 (passed to the guest's init). */
  ip?: string;
  /** `gatewayip=`: the guest's default gateway. */
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
  kernel: string;
  ramdisk?: string;
  /** `extra=` / `cmdline=`: the kernel command line. */
  cmdline: string;
  disks: DiskConfig[];
  vifs: VifConfig[];
  /** The config file itself (absolute path). */
  source: string;
}
