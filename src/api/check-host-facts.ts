/**
 * What a receiver's host can say about a VM config before any VM exists
 * (`colo check`'s probe, check-probe.ts): how it parses the config, which
 * engine it would start, whether the files it names are there and of what
 * size, the host's free memory, the free space where replicated disks
 * would spill, the bridges. Reads only: it opens each disk image as the
 * secondary would and closes it, and creates nothing.
 */
import { readFileSync, statfsSync, statSync } from "node:fs";
import { hostname } from "node:os";
import { dirname } from "node:path";
import { ConfigError, parseVmConfig, type VmConfig } from "../config/index.js";
import { predictEngine } from "../vm/engine-descriptor.js";
import { RawDiskBackend } from "../vm/raw-disk.js";
import { CHECK_PROBE_VERSION, type ConfigFact, type FileFact, type HostFacts, type ProbeRequest, type ReceiverRole, type SpillFact } from "./check-protocol.js";
import { spillDirOf } from "./daemon-replication.js";
import { currentNetnsName } from "./paths.js";
import { findVm } from "./registry.js";

/** statfs f_type of tmpfs (linux/magic.h TMPFS_MAGIC). */
const TMPFS_MAGIC = 0x01021994;
/** Where the qemu engine keeps its RAM files (qemu-engine.ts stateDir default). */
const QEMU_STATE_DIR = "/dev/shm";

const errnoOf = (err: unknown): string => (err as NodeJS.ErrnoException).code ?? (err as Error).message;

/** /proc/meminfo's MemAvailable and MemTotal (kB), in bytes. */
export function memInfo(text: string): { availableBytes: number; totalBytes: number } | { error: string } {
  const kb = (key: string) => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB$`, "m").exec(text);
    return m ? Number(m[1]) * 1024 : undefined;
  };
  const availableBytes = kb("MemAvailable");
  const totalBytes = kb("MemTotal");
  if (availableBytes === undefined || totalBytes === undefined) return { error: "/proc/meminfo has no MemAvailable or MemTotal" };
  return { availableBytes, totalBytes };
}

function readOr(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return undefined;
  }
}

function fileFact(role: FileFact["role"], path: string, index?: number, access?: "rw" | "ro"): FileFact {
  const base = { role, path, ...(index === undefined ? {} : { index }) };
  let st;
  try {
    st = statSync(path, { bigint: true });
  } catch (err) {
    return { ...base, exists: false, error: errnoOf(err) };
  }
  const fact: FileFact = { ...base, exists: true, bytes: Number(st.size), dev: st.dev.toString(), ino: st.ino.toString() };
  if (access !== undefined) {
    try {
      RawDiskBackend.open(path, access === "ro").close();
      fact.usable = true;
    } catch (err) {
      fact.usable = false;
      fact.error = (err as Error).message;
    }
  }
  return fact;
}

/** The nearest folder of `dir` (itself or a parent) that exists: the daemon creates the rest. */
function existingFolder(dir: string): string {
  for (let d = dir; ; d = dirname(d)) {
    try {
      if (statSync(d).isDirectory()) return d;
    } catch {
      // not there: its parent
    }
    if (dirname(d) === d) return d;
  }
}

function spillFact(config: VmConfig, disk: number): SpillFact {
  const dir = spillDirOf(config, disk);
  const checked = existingFolder(dir);
  try {
    const fs = statfsSync(checked);
    return { disk, dir, checked, dev: statSync(checked, { bigint: true }).dev.toString(), freeBytes: fs.bavail * fs.bsize, tmpfs: fs.type === TMPFS_MAGIC };
  } catch (err) {
    return { disk, dir, checked, error: errnoOf(err) };
  }
}

function configFact(config: VmConfig): ConfigFact {
  return { ok: true, name: config.name, engine: config.engine, memoryMiB: config.memoryMiB, disks: config.disks.length };
}

/** The facts of this host for `req`'s config, for a receiver started as `receiver`. */
export async function gatherHostFacts(req: ProbeRequest, receiver: ReceiverRole): Promise<HostFacts> {
  const netns = currentNetnsName();
  const bootId = readOr("/proc/sys/kernel/random/boot_id");
  const meminfo = readOr("/proc/meminfo");
  const facts: HostFacts = {
    version: CHECK_PROBE_VERSION,
    host: hostname(),
    ...(netns ? { netns } : {}),
    ...(bootId ? { bootId } : {}),
    receiver,
    config: { ok: false, error: "not parsed" },
    memory: meminfo === undefined ? { error: "cannot read /proc/meminfo" } : memInfo(meminfo),
    files: [],
    spill: [],
    bridges: [],
  };
  let config: VmConfig;
  try {
    config = parseVmConfig(req.config, req.configPath);
  } catch (err) {
    facts.config = { ok: false, error: err instanceof ConfigError ? err.message : `${req.configPath}: ${(err as Error).message}` };
    return facts;
  }
  facts.config = configFact(config);
  facts.engine = await predictEngine(config.engine);
  const running = findVm(config.name);
  if (running) facts.nameInUse = { pid: running.pid };
  if (config.engine === "qemu") {
    try {
      const fs = statfsSync(QEMU_STATE_DIR);
      facts.shm = { freeBytes: fs.bavail * fs.bsize };
    } catch (err) {
      facts.shm = { error: `${QEMU_STATE_DIR}: ${errnoOf(err)}` };
    }
  }
  facts.files.push(fileFact("kernel", config.kernel));
  if (config.ramdisk) facts.files.push(fileFact("ramdisk", config.ramdisk));
  config.disks.forEach((d, index) => {
    facts.files.push(fileFact("disk", d.target, index, d.access));
    if (d.access === "rw") facts.spill.push(spillFact(config, index));
  });
  for (const vif of config.vifs) {
    if (vif.bridge) facts.bridges.push({ name: vif.bridge, present: readOr(`/sys/class/net/${vif.bridge}/bridge/bridge_id`) !== undefined });
  }
  return facts;
}
