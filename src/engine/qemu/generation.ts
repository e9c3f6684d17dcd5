/**
 * One QEMU process of a VM with what belongs to it alone: its RAM file
 * mapping, its NIC stream (a socketpair) and its console socket. A VM's engine
 * replaces its generation when it loads a device state (a QEMU process takes
 * one incoming migration, ENGINE-NOTES.md), so the next generation is
 * prepared beside the running one: started with `-incoming defer`, paused,
 * connected to the same NBD exports. The RAM mapping is the engine's (it
 * maps each RAM file once for its lifetime); a generation borrows one.
 */
import { join } from "node:path";
import type { SharedMapping, WriteLog } from "../../sys/index.js";
import type { Accel } from "./accel.js";
import { ConsolePort } from "./console-port.js";
import { machineOptions } from "./machine-options.js";
import { QemuProcess, type QemuExit } from "./qemu-process.js";
import { StreamNetdev } from "./stream-netdev.js";

export interface GenerationConfig {
  vm: string;
  /** The engine's directory: sockets and files shared by generations live here. */
  dir: string;
  memoryBytes: number;
  cmdline: string;
  kernelFile: string;
  initrdFile?: string;
  mac?: string;
  diskSockets: readonly string[];
  exportName: string;
  accel: Accel;
  binary?: string;
  /** QEMU's environment (default ours): the write log's preload library goes in here. */
  env?: NodeJS.ProcessEnv;
  /** QEMU's nice value from its spawn (a standby's: it starts in the background). */
  nice?: number;
}

export interface GenerationHooks {
  onFrame(frame: Uint8Array): void;
  onConsole(bytes: Uint8Array): void;
  onProblem(message: string): void;
}

export class Generation {
  readonly netdev: StreamNetdev | undefined;
  readonly console: ConsolePort;
  readonly process: QemuProcess;
  /** The kernel's log of this QEMU's writes to guest RAM, when the engine reads one; closed by retire(). */
  writeLog: WriteLog | undefined;

  private constructor(
    readonly index: number,
    readonly ram: SharedMapping,
    readonly incoming: boolean,
    hooks: GenerationHooks,
    cfg: GenerationConfig,
  ) {
    this.netdev = cfg.mac === undefined ? undefined : new StreamNetdev(`NIC stream of ${cfg.vm} (QEMU ${index})`, (f) => hooks.onFrame(f), hooks.onProblem);
    this.console = new ConsolePort(join(cfg.dir, `console-${index}.sock`), (b) => hooks.onConsole(b));
    this.process = QemuProcess.create({ vm: cfg.vm, binary: cfg.binary, runDirParent: cfg.dir, ...(cfg.env !== undefined ? { env: cfg.env } : {}), ...(cfg.nice !== undefined ? { nice: cfg.nice } : {}) });
  }

  /**
   * Starts QEMU (paused) on the file of `ram`; with `incoming`, ready for
   * migrate-incoming. Leaves nothing behind when it fails.
   */
  static async start(index: number, ram: SharedMapping, incoming: boolean, cfg: GenerationConfig, hooks: GenerationHooks): Promise<Generation> {
    const ramFile = ram.path;
    let g: Generation | undefined;
    try {
      g = new Generation(index, ram, incoming, hooks, cfg);
      await g.console.listen();
      await g.process.start(
        machineOptions(
          {
            ramFile,
            kernelFile: cfg.kernelFile,
            ...(cfg.initrdFile !== undefined ? { initrdFile: cfg.initrdFile } : {}),
            ...(g.netdev !== undefined ? { netFd: g.netdev.qemuFd } : {}),
            consoleSocket: g.console.socketPath,
            diskSockets: cfg.diskSockets,
          },
          { memoryBytes: cfg.memoryBytes, cmdline: cfg.cmdline, ...(cfg.mac !== undefined ? { mac: cfg.mac } : {}), accel: cfg.accel, incoming, exportName: cfg.exportName },
        ),
      );
      return g;
    } catch (e) {
      if (g !== undefined) await g.retire("kill");
      throw e;
    }
  }

  get exited(): Promise<QemuExit> {
    return this.process.exited;
  }

  /** Ends the process (quit, or SIGKILL for a paused one nobody needs) and closes its sockets. */
  async retire(how: "quit" | "kill"): Promise<QemuExit> {
    const exit = how === "quit" ? await this.process.stop() : await this.process.kill();
    this.writeLog?.close();
    await this.netdev?.close();
    await this.console.close();
    return exit;
  }
}
