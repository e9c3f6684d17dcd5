import { spawn } from "node:child_process";
import { mkdirSync, openSync, closeSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { resolve } from "node:path";
import { loadVmConfig } from "../config/load.js";
import { request } from "../api/control-client.js";
import { isDaemonReport, type DaemonReport } from "../api/daemon-ipc.js";
import { currentNetnsName, runDir, vmRunFiles } from "../api/paths.js";
import { findVm, isDaemonAlive } from "../api/registry.js";
import { fail } from "./output.js";
import { waitForExit } from "./wait.js";

export interface CreateOptions {
  /** Seconds to wait for the guest's service; boots take 20-60 s on emu. */
  timeout: number;
  wait: boolean;
}

const MAIN = fileURLToPath(new URL("./main.js", import.meta.url));

/**
 * `colo create CFG`: validates the config, starts the VM daemon, and returns
 * when the guest reports its service up (COLO-GUEST-READY) or fails with the
 * console tail. On any failure nothing is left running.
 */
export async function createVm(cfgPath: string, opts: CreateOptions): Promise<void> {
  const config = await loadVmConfig(resolve(cfgPath));
  const running = findVm(config.name);
  if (running) fail(`a VM named ${config.name} is already running (pid ${running.pid})`);
  const dir = runDir();
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const files = vmRunFiles(config.name, dir);
  const logFd = openSync(files.log, "a");
  const netns = currentNetnsName();
  const child = spawn(process.execPath, [MAIN, "__vm-daemon", config.source], {
    detached: true,
    stdio: ["ignore", logFd, logFd, "ipc"],
    env: { ...process.env, ...(netns ? { COLO_NETNS: netns } : {}) },
  });
  closeSync(logFd);
  const pid = child.pid;
  if (pid === undefined) fail(`cannot start the VM daemon for ${config.name}`);

  if (!opts.wait) {
    child.disconnect();
    child.unref();
    process.stdout.write(`${config.name}: daemon started (pid ${pid}); not waiting for the guest\n`);
    return;
  }

  const outcome = await new Promise<DaemonReport | { type: "exit"; code: number | null; signal: string | null } | { type: "timeout" }>(
    (done) => {
      const timer = setTimeout(() => done({ type: "timeout" }), opts.timeout * 1000);
      child.on("message", (m: unknown) => {
        if (isDaemonReport(m)) {
          clearTimeout(timer);
          done(m);
        }
      });
      child.on("exit", (code, signal) => {
        clearTimeout(timer);
        done({ type: "exit", code, signal });
      });
    },
  );

  if (outcome.type === "ready") {
    child.disconnect();
    child.unref();
    process.stdout.write(
      `${config.name}: guest ready in ${(outcome.bootMs / 1000).toFixed(1)} s (${outcome.line}); daemon pid ${pid}; console: colo console ${config.name}\n`,
    );
    return;
  }
  // Failure of any kind: make sure the daemon is gone before reporting.
  let tail = "";
  if (outcome.type === "failed") tail = outcome.consoleTail;
  if (outcome.type === "timeout") {
    try {
      const r = (await request(files.socket, { op: "console-tail", bytes: 2048 }, 5000)) as { text?: string };
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
  const detail = tail.trim() ? `--- console tail ---\n${tail.trimEnd()}\n--- daemon log: ${files.log} ---` : undefined;
  if (outcome.type === "failed") fail(`create ${config.name}: ${outcome.error}`, detail);
  if (outcome.type === "timeout") fail(`create ${config.name}: the guest did not report ready within ${opts.timeout} s`, detail);
  fail(`create ${config.name}: the VM daemon exited (${outcome.signal ?? `code ${outcome.code}`}) before the guest was ready`, detail);
}
