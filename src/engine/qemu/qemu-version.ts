/**
 * The QEMU this host would start, asked without starting a machine:
 * `qemu-system-x86_64 --version` prints "QEMU emulator version 7.2.22
 * (Debian 1:7.2+dfsg-7+deb12u18+b3)", the major.minor.micro and package
 * string the QMP greeting of a started QEMU gives (qemu-process.ts). What
 * `colo check` predicts a secondary's engine compatibility from; a
 * running engine's own is still the greeting's (qemu-engine.ts).
 */
import { execFile } from "node:child_process";
import { findExecutable } from "./find-executable.js";
import { DEFAULT_QEMU_BINARY, QEMU_PACKAGE } from "./qemu-process.js";
import { QemuProcessError } from "./qemu-process-error.js";
import type { QemuVersion } from "./qmp-wire.js";

/** The machine type every qemu engine runs (machine-options.ts builds it): part of the engine's compatibility. */
export const QEMU_MACHINE_TYPE = "pc";

/** Engine.compatibility of a qemu engine running QEMU `version` ("7.2.22"): "qemu 7.2.22 pc". */
export function qemuCompatibility(version: string): string {
  return `qemu ${version} ${QEMU_MACHINE_TYPE}`;
}

/** `--version` answers in milliseconds; a binary that does not within this is not one we can drive. */
const VERSION_TIMEOUT_MS = 5_000;
/** Its answer is two lines; more than this is not QEMU's. */
const MAX_VERSION_OUTPUT = 64 * 1024;

/** "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)": the version and the package string (empty when none). */
export function parseQemuVersionOutput(text: string): QemuVersion | undefined {
  const m = /QEMU emulator version (\d+)\.(\d+)\.(\d+)(?:\s*\(([^)\n]*)\))?/.exec(text);
  if (!m) return undefined;
  return { major: Number(m[1]), minor: Number(m[2]), micro: Number(m[3]), package: m[4] ?? "" };
}

export interface InstalledQemu {
  binary: string;
  version: QemuVersion;
}

/** Runs `binary --version` (found on env.PATH as QEMU would be); throws QemuProcessError naming the binary and what failed. */
export function installedQemuVersion(opts: { binary?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<InstalledQemu> {
  const env = opts.env ?? process.env;
  const name = opts.binary ?? DEFAULT_QEMU_BINARY;
  const found = findExecutable(name, env.PATH ?? "");
  if (found.path === undefined) return Promise.reject(new QemuProcessError("-", "BINARY_MISSING", `${found.why} (install Debian's ${QEMU_PACKAGE})`));
  const binary = found.path;
  return new Promise((resolve, reject) => {
    execFile(binary, ["--version"], { env, timeout: opts.timeoutMs ?? VERSION_TIMEOUT_MS, maxBuffer: MAX_VERSION_OUTPUT, encoding: "utf8" }, (err, stdout) => {
      if (err) return reject(new QemuProcessError("-", "START_FAILED", `${binary} --version failed: ${err.killed ? `no answer within ${opts.timeoutMs ?? VERSION_TIMEOUT_MS} ms` : err.message}`));
      const version = parseQemuVersionOutput(stdout);
      if (!version) return reject(new QemuProcessError("-", "START_FAILED", `${binary} --version: no "QEMU emulator version X.Y.Z" in ${JSON.stringify(stdout.slice(0, 80))}`));
      resolve({ binary, version });
    });
  });
}
