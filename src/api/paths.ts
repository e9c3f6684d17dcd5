import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

/** Where `ip netns add` keeps its named namespaces (iproute2). */
const NETNS_RUN_DIR = "/run/netns";

/**
 * The name of the network namespace this process runs in, when it is one
 * `ip netns` named (compares namespace inodes; no child process).
 */
export function currentNetnsName(): string | undefined {
  let self;
  try {
    self = statSync("/proc/self/ns/net");
  } catch {
    return undefined;
  }
  let names: string[];
  try {
    names = readdirSync(NETNS_RUN_DIR);
  } catch {
    return undefined;
  }
  for (const name of names.sort()) {
    try {
      const s = statSync(join(NETNS_RUN_DIR, name));
      if (s.ino === self.ino && s.dev === self.dev) return name;
    } catch {
      // namespace removed meanwhile
    }
  }
  return undefined;
}

/**
 * Where VM daemons keep their control sockets and records. `COLO_RUN_DIR`
 * overrides the base (tests use a private folder so they never touch a
 * developer's VMs). A process in a named network namespace -- a lab "host"
 * -- gets its own subfolder, so two hosts on one machine keep separate
 * views, as two machines would.
 */
export function runDir(): string {
  const base = process.env.COLO_RUN_DIR ?? "/run/colo";
  const netns = currentNetnsName();
  return netns ? join(base, "netns", netns) : base;
}

export interface VmRunFiles {
  /** Control socket (JSON lines). */
  socket: string;
  /** The daemon's record: pid, config, start time (JSON). */
  record: string;
  /** The daemon's log (its stdout and stderr). */
  log: string;
}

export function vmRunFiles(name: string, dir = runDir()): VmRunFiles {
  return {
    socket: join(dir, `${name}.sock`),
    record: join(dir, `${name}.json`),
    log: join(dir, `${name}.log`),
  };
}
