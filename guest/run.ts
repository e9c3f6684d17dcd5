/**
 * Runs a host command asynchronously and turns every failure into a
 * GuestBuildError naming the command. Asynchronous on purpose: a synchronous
 * child process would freeze any emulator running in the same process.
 */

import { execFile } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { delimiter, isAbsolute, join, relative, resolve } from "node:path";
import { GuestBuildError, type GuestBuildErrorCode } from "./errors.js";

/**
 * Trees of unpacked guest packages: nothing inside one may be executed on
 * the host (the host may not run the guest's architecture at all, and a
 * build must not depend on running guest code). `run` refuses such a
 * command before spawning anything.
 */
const guestTrees = new Set<string>();

/** Forbids executing anything under `root` until the returned function is called. */
export function forbidExecutionUnder(root: string): () => void {
  const abs = resolve(root);
  guestTrees.add(abs);
  return () => {
    guestTrees.delete(abs);
  };
}

/** The file `command` would execute: a path as given, or the first executable of that name on PATH. */
function commandPath(command: string, cwd: string | undefined, env: NodeJS.ProcessEnv): string | undefined {
  if (command.includes("/")) return resolve(cwd ?? process.cwd(), command);
  for (const dir of (env.PATH ?? "").split(delimiter)) {
    if (dir === "") continue;
    const candidate = resolve(cwd ?? process.cwd(), join(dir, command));
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

function insideGuestTree(path: string): string | undefined {
  for (const root of guestTrees) {
    const rel = relative(root, path);
    if (rel === "" || (!rel.startsWith("..") && !isAbsolute(rel))) return root;
  }
  return undefined;
}

export interface RunOptions {
  cwd?: string;
  /** Error code when the command exits non-zero (default COMMAND_FAILED). */
  failCode?: GuestBuildErrorCode;
  /** What the command is for, put in error messages ("resolving busybox-static"). */
  what?: string;
  env?: NodeJS.ProcessEnv;
  /** Written to the command's standard input, which is then closed. */
  input?: Uint8Array;
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
  const env = opts.env ?? process.env;
  const path = commandPath(command, opts.cwd, env);
  const tree = path === undefined ? undefined : insideGuestTree(path);
  if (tree !== undefined) {
    return Promise.reject(
      new GuestBuildError("GUEST_CODE_ON_HOST", `refusing to run ${label}${context}: ${path} belongs to the unpacked guest packages in ${tree}; guest code never runs on the host`),
    );
  }
  return new Promise((resolvePromise, reject) => {
    const child = execFile(
      command,
      [...args],
      { cwd: opts.cwd, env, encoding: "buffer", maxBuffer: MAX_OUTPUT },
      (error, stdout, stderr) => {
        const errText = stderr.toString("utf8");
        if (error === null) {
          resolvePromise({ stdout, stderr: errText });
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
    if (opts.input !== undefined) {
      // A command that exits without reading all its input gets EPIPE here; its exit status tells the rest.
      child.stdin?.on("error", () => {});
      child.stdin?.end(opts.input);
    }
  });
}
