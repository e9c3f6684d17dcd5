import { resolve } from "node:path";
import { loadVmConfig } from "../config/load.js";
import { vmRunFiles } from "../api/paths.js";
import { findVm } from "../api/registry.js";
import { spawnDaemon } from "./daemon-spawn.js";
import { fail } from "./output.js";

export interface CreateOptions {
  /** Seconds to wait for the guest's service; boots take 13-60 s on emu. */
  timeout: number;
}

/**
 * `colo create CFG`: validates the config, starts the VM daemon, and returns
 * when the guest reports its service up (COLO-GUEST-READY) or fails with the
 * console tail. On any failure nothing is left running.
 */
export async function createVm(cfgPath: string, opts: CreateOptions): Promise<void> {
  const config = await loadVmConfig(resolve(cfgPath));
  const running = findVm(config.name);
  if (running) fail(`a VM named ${config.name} is already running (pid ${running.pid})`);
  const files = vmRunFiles(config.name);
  const { pid, report } = await spawnDaemon(["--config", config.source], {
    what: `create ${config.name}`,
    logName: `${config.name}.log`,
    timeoutS: opts.timeout,
    socket: files.socket,
  });
  if (report.type === "ready") {
    process.stdout.write(
      `${config.name}: guest ready in ${(report.bootMs / 1000).toFixed(1)} s (${report.line}); daemon pid ${pid}; console: colo console ${config.name}\n`,
    );
  }
}
