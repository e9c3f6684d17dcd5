import { cpus, totalmem, release, hostname } from "node:os";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { spawnSync } from "node:child_process";

/** `qemu-system-x86_64 --version`'s version, or "not installed". */
function qemuVersion(): string {
  const r = spawnSync("qemu-system-x86_64", ["--version"], { encoding: "utf8" });
  return r.status === 0 ? (/version (\S+)/.exec(r.stdout)?.[1] ?? "unknown") : "not installed";
}

/** Facts recorded with every benchmark result: results from different machines are not comparable. */
export function machineInfo(): Record<string, unknown> {
  const require = createRequire(import.meta.url);
  const pkg = (name: string): string => {
    try {
      return (require(`${name}/package.json`) as { version: string }).version;
    } catch {
      return "unknown";
    }
  };
  let osRelease = "unknown";
  try {
    osRelease = /PRETTY_NAME="([^"]+)"/.exec(readFileSync("/etc/os-release", "utf8"))?.[1] ?? "unknown";
  } catch {
    // not Linux-like
  }
  return {
    hostname: hostname(),
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? "unknown",
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    os: osRelease,
    node: process.version,
    v86: pkg("v86"),
    qemu: qemuVersion(),
    koffi: pkg("koffi"),
  };
}
