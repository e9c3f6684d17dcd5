/**
 * Runs a host command asynchronously and turns every failure into a
 * GuestBuildError naming the command. Asynchronous on purpose: a synchronous
 * child process would freeze any emulator running in the same process.
 */

import { execFile } from "node:child_process";
import { GuestBuildError, type GuestBuildErrorCode } from "./errors.js";

export interface RunOptions {
  cwd?: string;
  /** Error code when the command exits non-zero (default COMMAND_FAILED). */
  failCode?: GuestBuildErrorCode;
  /** What the command is for, put in error messages ("resolving busybox-static"). */
  what?: string;
  env?: NodeJS.ProcessEnv;
}

export interface RunResult {
  stdout: Buffer;
  stderr: string;
}

/** Generous: `xz -dc` of a module or apt-cache output of many packages. */
const MAX_OUTPUT = 256 * 1024 * 1024;

function lastLines(text: string, n: number): string {
  return text.trim().split("\n").slice(-n).join(" | ");
}

export function run(command: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const label = `${command} ${args.join(" ")}`.trim();
  const context = opts.what !== undefined ? ` (${opts.what})` : "";
  return new Promise((resolve, reject) => {
    execFile(
      command,
      [...args],
      { cwd: opts.cwd, env: opts.env ?? process.env, encoding: "buffer", maxBuffer: MAX_OUTPUT },
      (error, stdout, stderr) => {
        const errText = stderr.toString("utf8");
        if (error === null) {
          resolve({ stdout, stderr: errText });
          return;
        }
        const code = (error as NodeJS.ErrnoException).code;
        if (code === "ENOENT") {
          reject(new GuestBuildError("TOOL_MISSING", `${command} not found on the host${context}`, { cause: error }));
          return;
        }
        const status = typeof code === "number" ? `exit status ${code}` : (error.signal ?? String(code));
        const detail = lastLines(errText, 4) || lastLines(stdout.toString("utf8"), 4);
        reject(
          new GuestBuildError(opts.failCode ?? "COMMAND_FAILED", `${label} failed (${status})${context}${detail ? `: ${detail}` : ""}`, {
            cause: error,
          }),
        );
      },
    );
  });
}
