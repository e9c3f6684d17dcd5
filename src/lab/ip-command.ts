/**
 * Running iproute2's `ip` as an asynchronous child process (never a
 * synchronous one: this code may share its process with an emulator).
 */
import { spawn } from "node:child_process";

export const IP_BIN = "ip";

/** A failed `ip` command: the command line, its exit status and stderr. */
export class IpCommandError extends Error {
  readonly command: string;
  readonly exitCode: number | null;
  readonly stderr: string;

  constructor(command: string, exitCode: number | null, stderr: string, cause?: unknown) {
    const why = exitCode === null ? "could not run" : `failed (exit ${exitCode})`;
    super(`lab: \`${command}\` ${why}: ${stderr.trim() || "(no stderr)"}`, cause === undefined ? undefined : { cause });
    this.name = "IpCommandError";
    this.command = command;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

/** Quotes an argument for display only (the command is never run by a shell). */
function show(args: readonly string[]): string {
  return [IP_BIN, ...args].map((a) => (/^[A-Za-z0-9_./:=+-]+$/.test(a) ? a : JSON.stringify(a))).join(" ");
}

export function formatIp(args: readonly string[]): string {
  return show(args);
}

const TIMEOUT_MS = 30_000;

/** Runs `ip ARGS`; resolves with stdout, rejects with IpCommandError. */
export function runIp(args: readonly string[]): Promise<string> {
  const command = show(args);
  return new Promise((resolve, reject) => {
    const child = spawn(IP_BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    // A guard against a hung child, not a wait: `ip` returns in milliseconds.
    const timer = setTimeout(() => child.kill("SIGKILL"), TIMEOUT_MS);
    child.on("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const why = err.code === "ENOENT" ? `${IP_BIN} (iproute2) not found in PATH` : err.message;
      reject(new IpCommandError(command, null, why, err));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(stdout);
      else reject(new IpCommandError(command, code, signal === null ? stderr : `${stderr}killed by ${signal}`));
    });
  });
}
