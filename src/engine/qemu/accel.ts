/**
 * Which QEMU accelerator a VM gets. KVM only where it can run a stock
 * kernel: /dev/kvm present and usable, served by a hardware-virtualization
 * module (kvm_intel or kvm_amd). kvm_pvm (these build machines) is a
 * software hypervisor that runs no stock kernel (ENGINE-NOTES.md): TCG.
 */
import { accessSync, constants, existsSync } from "node:fs";
import { join } from "node:path";

export type AccelRequest = "auto" | "kvm" | "tcg";
export type Accel = "kvm" | "tcg";

export interface AccelChoice {
  accel: Accel;
  /** Why, for logs and status ("kvm_amd serves /dev/kvm", "no /dev/kvm"). */
  why: string;
}

export type AccelErrorCode =
  | "NO_KVM_DEVICE" // no /dev/kvm
  | "KVM_NOT_ACCESSIBLE" // /dev/kvm not readable and writable by us
  | "SOFTWARE_KVM" // /dev/kvm is kvm_pvm
  | "NO_HARDWARE_KVM"; // /dev/kvm without kvm_intel/kvm_amd loaded

export class AccelError extends Error {
  constructor(
    readonly code: AccelErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "AccelError";
  }
}

export interface AccelProbeOptions {
  /** Root of the filesystem probed (tests pass a fake tree); default "/". */
  root?: string;
}

/** Loaded-module directories (linux: /sys/module/<name> exists while the module is loaded or built in). */
const HARDWARE_KVM_MODULES = ["kvm_intel", "kvm_amd"] as const;
const SOFTWARE_KVM_MODULE = "kvm_pvm";

type KvmProbe = { usable: true; module: string } | { usable: false; code: AccelErrorCode; why: string };

function probeKvm(root: string): KvmProbe {
  const dev = join(root, "dev/kvm");
  const loaded = (name: string): boolean => existsSync(join(root, "sys/module", name));
  if (!existsSync(dev)) return { usable: false, code: "NO_KVM_DEVICE", why: `no ${dev}` };
  // Checked before the hardware modules: with kvm_pvm loaded we cannot tell which module serves /dev/kvm.
  if (loaded(SOFTWARE_KVM_MODULE)) {
    return {
      usable: false,
      code: "SOFTWARE_KVM",
      why: `${dev} is ${SOFTWARE_KVM_MODULE}, a software hypervisor that runs no stock kernel`,
    };
  }
  const module = HARDWARE_KVM_MODULES.find(loaded);
  if (module === undefined) {
    return { usable: false, code: "NO_HARDWARE_KVM", why: `${dev} exists but neither ${HARDWARE_KVM_MODULES.join(" nor ")} is loaded` };
  }
  try {
    accessSync(dev, constants.R_OK | constants.W_OK);
  } catch {
    return { usable: false, code: "KVM_NOT_ACCESSIBLE", why: `${dev} (${module}) is not readable and writable by this user` };
  }
  return { usable: true, module };
}

/**
 * `auto`: KVM when usable, else TCG (with why); `kvm`: KVM or an
 * AccelError saying why not; `tcg`: TCG.
 */
export function resolveAccel(request: AccelRequest, opts: AccelProbeOptions = {}): AccelChoice {
  if (request === "tcg") return { accel: "tcg", why: "tcg requested" };
  const probe = probeKvm(opts.root ?? "/");
  if (probe.usable) return { accel: "kvm", why: `${probe.module} serves /dev/kvm` };
  if (request === "auto") return { accel: "tcg", why: `KVM not usable: ${probe.why}` };
  throw new AccelError(probe.code, `accel=kvm cannot work on this host: ${probe.why}`);
}
