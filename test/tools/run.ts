import { spawn, type SpawnOptions } from "node:child_process";
import { fileURLToPath } from "node:url";

/** The repository root (this file is dist/test/tools/run.js once compiled). */
export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
export const COLO_BIN = `${REPO_ROOT}bin/colo`;

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (bounded by `timeoutMs`, then SIGKILL) and captures its output. */
export function run(cmd: string, args: string[], opts: SpawnOptions & { timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...opts, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr?.on("data", (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60_000);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

/** Runs a command inside a network namespace. */
export function runIn(netns: string, cmd: string, args: string[], opts: SpawnOptions & { timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
  return run("ip", ["netns", "exec", netns, cmd, ...args], opts);
}

export function isRoot(): boolean {
  return typeof process.getuid === "function" && process.getuid() === 0;
}
