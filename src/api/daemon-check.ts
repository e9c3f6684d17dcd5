/**
 * The primary's half of `colo check`'s facts, answered by the VM's daemon
 * (control request `check`, docs/control-socket.md): the running machine
 * (engine and its compatibility, memory, disks and their sizes, the config
 * it was created from) and the guest's dirty rate, sampled without pausing
 * it and without touching the engine's dirty log (src/engine/dirty-rate.ts).
 */
import { readFileSync, statSync } from "node:fs";
import type { EngineId } from "../engine/engine.js";
import { sampleDirtyRate, type DirtyRateSample } from "../engine/dirty-rate.js";
import type { Vm, VmRunState } from "../vm/vm.js";
import type { ConfigSource } from "./image-io.js";
import { leaseHolderName } from "./daemon-replication.js";

/** The default window of the dirty-rate sample. */
export const DEFAULT_DIRTY_SAMPLE_MS = 1_000;

export interface VmFileFacts {
  path: string;
  bytes?: number;
  /** st_dev and st_ino (decimal), to tell the primary's own file on a secondary of the same machine. */
  dev?: string;
  ino?: string;
}

export interface VmDiskFacts extends VmFileFacts {
  /** Index in the config's disk list (what replication numbers disks by). */
  index: number;
  vdev: string;
  access: "rw" | "ro";
  bytes: number;
}

export interface VmFacts {
  name: string;
  state: VmRunState;
  /** A replicating primary or a secondary is not to be protected again. */
  role: "unprotected" | "primary" | "secondary";
  /** The secondary of a replicating primary. */
  peer?: string;
  engine: EngineId;
  /** Engine.compatibility of the running engine ("qemu 7.2.22 pc"). */
  compatibility?: string;
  memoryMiB: number;
  /** The config the VM was created from: what the secondary gets without -C. */
  config: ConfigSource;
  kernel: VmFileFacts;
  ramdisk?: VmFileFacts;
  disks: VmDiskFacts[];
  bootId?: string;
  /** This daemon's name as a lease holder (an arbiter lease held by another is a conflict). */
  leaseHolder: string;
  dirty: DirtyRateSample;
}

function fileFacts(path: string): VmFileFacts {
  try {
    const st = statSync(path, { bigint: true });
    return { path, bytes: Number(st.size), dev: st.dev.toString(), ino: st.ino.toString() };
  } catch {
    return { path };
  }
}

function bootId(): string | undefined {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return undefined;
  }
}

/** The facts of `vm` (started), with a dirty-rate sample over `sampleMs`. */
export async function vmCheckFacts(vm: Vm, source: ConfigSource, role: { role: VmFacts["role"]; peer?: string }, sampleMs: number): Promise<VmFacts> {
  const engine = vm.machine;
  const config = vm.config;
  const slots = vm.diskSlots();
  const dirty = await sampleDirtyRate(() => engine.ram(), engine.memoryBytes, { windowMs: sampleMs });
  const id = bootId();
  return {
    name: vm.name,
    state: vm.state,
    ...role,
    engine: engine.id,
    ...(engine.compatibility !== undefined ? { compatibility: engine.compatibility } : {}),
    memoryMiB: config.memoryMiB,
    config: source,
    kernel: fileFacts(config.kernel),
    ...(config.ramdisk ? { ramdisk: fileFacts(config.ramdisk) } : {}),
    disks: config.disks.map((d, index) => ({ ...fileFacts(d.target), index, vdev: d.vdev, access: d.access, bytes: slots[index]?.byteLength ?? 0 })),
    ...(id ? { bootId: id } : {}),
    leaseHolder: leaseHolderName(),
    dirty,
  };
}
