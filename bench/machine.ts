import { cpus, totalmem, release, hostname } from "node:os";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

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
    koffi: pkg("koffi"),
  };
}
