/**
 * The kernel's write log of a QEMU process's guest RAM (docs/engines.md,
 * "Dirty pages"). QEMU is started with write-log-preload.c in LD_PRELOAD,
 * which makes a userfaultfd for QEMU's memory before QEMU runs; once QEMU
 * has mapped the RAM file, we copy that descriptor and register the
 * mapping on it (src/sys/write-log.ts: async write-protection, read with
 * PAGEMAP_SCAN). Without the preload library (no C compiler at build) or a
 * kernel that allows it, the engine compares RAM with a shadow copy.
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { descriptorsLinkedTo, mappingsOfFile, openProcessWriteLog, type SharedMapping, type WriteLog } from "../../sys/index.js";

/** Built by scripts/build-native.mjs (npm run build) into dist/native/. */
const PRELOAD = fileURLToPath(new URL("../../../native/qemu-write-log-preload.so", import.meta.url));
const USERFAULTFD_LINK = "anon_inode:[userfaultfd]";

/** The preload library's path, or why there is none. */
export function writeLogPreload(): { path: string } | { unavailable: string } {
  return existsSync(PRELOAD) ? { path: PRELOAD } : { unavailable: `${PRELOAD} was not built (scripts/build-native.mjs needs a C compiler: scripts/setup-host.sh installs gcc)` };
}

/** The environment QEMU is started with for a write log: the preload library first in LD_PRELOAD. */
export function writeLogEnv(preload: string, env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const others = env.LD_PRELOAD !== undefined && env.LD_PRELOAD !== "" ? `:${env.LD_PRELOAD}` : "";
  return { ...env, LD_PRELOAD: `${preload}${others}`, COLO_WRITE_LOG: "1" };
}

/** A write log of QEMU process `pid`'s mapping of `ram` (started with writeLogEnv()), or why not. */
export function openQemuWriteLog(pid: number, ram: SharedMapping): WriteLog | { unavailable: string } {
  let fds: number[];
  let maps: bigint[];
  try {
    fds = descriptorsLinkedTo(pid, USERFAULTFD_LINK);
    maps = mappingsOfFile(pid, ram.path, ram.bytes.length);
  } catch (e) {
    return { unavailable: `QEMU (pid ${pid}) could not be inspected: ${(e as Error).message}` };
  }
  if (fds.length !== 1) return { unavailable: fds.length === 0 ? `QEMU (pid ${pid}) holds no userfaultfd: the kernel refused it one` : `QEMU (pid ${pid}) holds ${fds.length} userfaultfds, expected ours alone` };
  if (maps.length !== 1) return { unavailable: `QEMU (pid ${pid}) maps guest RAM ${maps.length} times, expected once` };
  return openProcessWriteLog(pid, fds[0] as number, maps[0] as bigint, ram.bytes.length);
}
