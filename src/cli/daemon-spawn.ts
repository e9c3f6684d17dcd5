import { spawn } from "node:child_process";
import { closeSync, mkdirSync, openSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { request } from "../api/control-client.js";
import { isDaemonReport, type DaemonReport } from "../api/daemon-ipc.js";
import { currentNetnsName, runDir } from "../api/paths.js";
import { isDaemonAlive } from "../api/registry.js";
import { fail } from "./output.js";
import { waitForExit } from "./wait.js";

const MAIN = fileURLToPath(new URL("./main.js", import.meta.url));

export interface SpawnedReady {
  pid: number;
  report: Extract<DaemonReport, { type: "ready" }>;
}

/**
 * Starts a VM daemon (`__vm-daemon ARGS`) detached, in this network
 * namespace, its output appended to `logName` in the run directory, and
 * waits for it to report ready. On failure, timeout or early exit it makes
 * sure the daemon is gone, then fails with the error and the console tail.
 */
export async function spawnDaemon(
  args: string[],
  opts: {
    what: string;
    logName: string;
    timeoutS: number;
    /** Control socket to ask for a console tail on timeout, when known. */
    socket?: string;
    onReport?: (r: DaemonReport) => void;
    /** Return as soon as this report arrives (e.g. "listening" with --detach). */
    returnOn?: DaemonReport["type"];
  },
): Promise<{ pid: number; report: DaemonReport }> {
  const dir = runDir();
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const logPath = join(dir, opts.logName);
  const logFd = openSync(logPath, "a");
  const netns = currentNetnsName();
  const child = spawn(process.execPath, [MAIN, "__vm-daemon", ...args], {
    detached: true,
    stdio: ["ignore", logFd, logFd, "ipc"],
    env: { ...process.env, ...(netns ? { COLO_NETNS: netns } : {}) },
  });
  closeSync(logFd);
  const pid = child.pid;
  if (pid === undefined) fail(`${opts.what}: cannot start the VM daemon`);
  type Outcome = DaemonReport | { type: "exit"; code: number | null; signal: string | null } | { type: "timeout" };
  const outcome = await new Promise<Outcome>((done) => {
    const timer = setTimeout(() => done({ type: "timeout" }), opts.timeoutS * 1000);
    child.on("message", (m: unknown) => {
      if (!isDaemonReport(m)) return;
      opts.onReport?.(m);
      if (m.type === "ready" || m.type === "failed" || m.type === opts.returnOn) {
        clearTimeout(timer);
        done(m);
      }
    });
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      done({ type: "exit", code, signal });
    });
  });
  if (outcome.type !== "failed" && outcome.type !== "exit" && outcome.type !== "timeout") {
    child.disconnect();
    child.unref();
    return { pid, report: outcome };
  }
  let tail = outcome.type === "failed" ? outcome.consoleTail : "";
  if (outcome.type === "timeout" && opts.socket) {
    try {
      const r = (await request(opts.socket, { op: "console-tail", bytes: 2048 }, 5000)) as { text?: string };
      tail = r.text ?? "";
    } catch {
      // daemon unresponsive: no tail
    }
  }
  if (isDaemonAlive(pid)) {
    process.kill(pid, "SIGTERM");
    if (!(await waitForExit(pid, 15_000))) process.kill(pid, "SIGKILL");
    await waitForExit(pid, 5_000);
  }
  child.unref();
  const detail = tail.trim() ? `--- console tail ---\n${tail.trimEnd()}\n--- daemon log: ${logPath} ---` : undefined;
  if (outcome.type === "failed") fail(`${opts.what}: ${outcome.error}`, detail);
  if (outcome.type === "timeout") fail(`${opts.what}: not ready within ${opts.timeoutS} s (daemon log: ${logPath})`, detail);
  fail(`${opts.what}: the VM daemon exited (${outcome.signal ?? `code ${outcome.code}`}) before it was ready (daemon log: ${logPath})`, detail);
}
