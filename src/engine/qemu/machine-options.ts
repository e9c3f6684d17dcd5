/**
 * The QEMU machine a MachineSpec becomes: a typed description (qemu-args.ts
 * turns it into argv). Everything the guest touches that we must own goes
 * through the daemon: RAM is a shared file we map, the NIC is a stream
 * socket to us, each disk an NBD export of ours, the console a socket to us.
 *
 * Flags that matter for checkpoints (ENGINE-NOTES.md "QEMU engine"):
 * `suppress-vmdesc=on` and `migration.send-configuration=off` make the
 * device state of `xen-save-devices-state` loadable by `migrate-incoming`
 * into a standby started with `-incoming defer`.
 */
import type { Accel } from "./accel.js";
import { childFd, type QemuMachine, type QemuOption } from "./qemu-args.js";

/** The id of the RAM backend object (`-machine memory-backend=`). */
export const RAM_BACKEND_ID = "colo-ram";

export interface MachinePaths {
  /** The guest RAM file (on tmpfs), shared with the daemon. */
  ramFile: string;
  kernelFile: string;
  initrdFile?: string;
  /** Our descriptor of QEMU's end of the NIC's stream socketpair (absent: no NIC); QEMU gets it as fd 3. */
  netFd?: number;
  consoleSocket: string;
  /** One NBD socket per disk, in order (the first is the guest's /dev/vda). */
  diskSockets: readonly string[];
}

export interface MachineOptions {
  memoryBytes: number;
  cmdline: string;
  /** The NIC's MAC ("52:54:00:12:34:56"); ignored without paths.netFd. */
  mac?: string;
  accel: Accel;
  /** Started to take an incoming device state (`-incoming defer`). */
  incoming: boolean;
  /** NBD export name of every disk. */
  exportName: string;
}

/** The machine type: i440fx, as QEMU's own COLO tests use; virtio devices on PCI. */
const MACHINE_TYPE = "pc";

export function machineOptions(paths: MachinePaths, o: MachineOptions): QemuMachine {
  if (o.memoryBytes % 2 ** 20 !== 0) throw new RangeError(`memory ${o.memoryBytes} bytes is not a whole number of MiB`);
  const options: QemuOption[] = [
    { flag: "-object", type: "memory-backend-file", props: { id: RAM_BACKEND_ID, size: o.memoryBytes, "mem-path": paths.ramFile, share: true, prealloc: false } },
    { flag: "-global", raw: "migration.send-configuration=off" },
    // Guest poweroff and reboot stop the vCPUs and tell us (SHUTDOWN event) instead of ending or resetting QEMU.
    { flag: "-action", props: { reboot: "shutdown", shutdown: "pause", panic: "pause" } },
    { flag: "-kernel", raw: paths.kernelFile },
    ...(paths.initrdFile !== undefined ? [{ flag: "-initrd", raw: paths.initrdFile } as const] : []),
    { flag: "-append", raw: o.cmdline },
    { flag: "-chardev", type: "socket", props: { id: "con0", path: paths.consoleSocket, server: false } },
    { flag: "-serial", raw: "chardev:con0" },
  ];
  const passFds: number[] = [];
  if (paths.netFd !== undefined) {
    passFds.push(paths.netFd);
    options.push(
      { flag: "-netdev", type: "stream", props: { id: "net0", server: false, "addr.type": "fd", "addr.str": String(childFd(passFds.length - 1)) } },
      { flag: "-device", type: "virtio-net-pci", props: { netdev: "net0", mac: o.mac, romfile: "" } },
    );
  }
  paths.diskSockets.forEach((sock, i) => {
    options.push(
      { flag: "-blockdev", raw: JSON.stringify({ driver: "nbd", "node-name": `disk${i}`, server: { type: "unix", path: sock }, export: o.exportName }) },
      { flag: "-device", type: "virtio-blk-pci", props: { drive: `disk${i}`, "write-cache": true } },
    );
  });
  if (o.incoming) options.push({ flag: "-incoming", raw: "defer" });
  return {
    machine: { type: MACHINE_TYPE, props: { "memory-backend": RAM_BACKEND_ID, "suppress-vmdesc": true } },
    accel: o.accel,
    memoryMiB: o.memoryBytes / 2 ** 20,
    cpu: "max",
    smp: 1,
    options,
    passFds,
  };
}

/** "52:54:00:12:34:56" from 6 octets. */
export function macText(mac: Uint8Array): string {
  return [...mac].map((b) => b.toString(16).padStart(2, "0")).join(":");
}
