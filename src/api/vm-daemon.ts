import { mkdirSync } from "node:fs";
import type { Socket } from "node:net";
import { loadVmConfig } from "../config/load.js";
import { GUEST_FAILED_MARKER, GUEST_READY_MARKER, Vm } from "../vm/vm.js";
import { ControlServer, type ControlHandler } from "./control-server.js";
import type { DaemonReport } from "./daemon-ipc.js";
import { daemonLogger, type Logger } from "./log.js";
import { runDir, vmRunFiles } from "./paths.js";
import { isDaemonAlive, removeStale } from "./registry.js";
import { readRecord, writeRecord } from "./vm-record.js";
import type { ControlRequest } from "./protocol.js";

function report(msg: DaemonReport): void {
  if (process.send && process.connected) process.send(msg);
}

/**
 * The per-VM daemon process (`colo create` spawns it; one process per VM,
 * like one QEMU per VM). Owns the VM and its control socket; removes its
 * run files on every exit it controls.
 */
export class VmDaemon implements ControlHandler {
  private vm: Vm | undefined;
  private server: ControlServer | undefined;
  private exiting = false;
  private readonly consoles = new Set<Socket>();

  constructor(
    private readonly configPath: string,
    private readonly log: Logger,
  ) {}

  async run(): Promise<void> {
    const config = await loadVmConfig(this.configPath);
    const dir = runDir();
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const files = vmRunFiles(config.name, dir);
    const existing = readRecord(files.record);
    if (existing && existing.pid !== process.pid && isDaemonAlive(existing.pid)) {
      throw new Error(`a VM named ${config.name} is already running (pid ${existing.pid})`);
    }
    removeStale(config.name, dir);
    this.vm = new Vm(config);
    this.server = await ControlServer.listen(files.socket, this);
    writeRecord(files.record, {
      name: config.name,
      pid: process.pid,
      config: config.source,
      startedAt: new Date().toISOString(),
      ...(process.env.COLO_NETNS ? { netns: process.env.COLO_NETNS } : {}),
    });
    this.log.info({ config: config.source }, "starting VM");
    const t0 = Date.now();
    const ready = this.vm.console.waitForLine(GUEST_READY_MARKER);
    const failed = this.vm.console.waitForLine(GUEST_FAILED_MARKER);
    await this.vm.start();
    this.log.info({ status: this.vm.status() }, "engine started, waiting for the guest");
    const outcome = await Promise.race([
      ready.promise.then((line) => ({ ok: true as const, line })),
      failed.promise.then((line) => ({ ok: false as const, line })),
    ]);
    ready.cancel();
    failed.cancel();
    if (!outcome.ok) throw new Error(`guest reported failure: ${outcome.line.trim()}`);
    const bootMs = Date.now() - t0;
    this.log.info({ bootMs, line: outcome.line.trim() }, "guest ready");
    report({ type: "ready", line: outcome.line.trim(), bootMs });
  }

  async handle(request: Exclude<ControlRequest, { op: "console" }>): Promise<unknown> {
    const vm = this.vm;
    if (!vm) throw new Error("VM not created yet");
    switch (request.op) {
      case "status":
        return { ...vm.status(), pid: process.pid };
      case "pause":
        await vm.pause();
        this.log.info("paused");
        return { state: vm.state };
      case "unpause":
        await vm.unpause();
        this.log.info("unpaused");
        return { state: vm.state };
      case "destroy":
        // Answer first, then go away.
        setImmediate(() => void this.shutdown(0, "destroy requested"));
        return { state: "destroying" };
      case "console-tail":
        return { text: vm.console.tailText(request.bytes ?? 4096) };
    }
  }

  attachConsole(socket: Socket, replay: boolean): void {
    const vm = this.vm;
    if (!vm) {
      socket.destroy();
      return;
    }
    this.consoles.add(socket);
    if (replay) socket.write(vm.console.tailBytes());
    const unsubscribe = vm.console.subscribe((bytes) => socket.write(bytes));
    socket.on("data", (chunk: Buffer) => {
      if (vm.state === "running" || vm.state === "paused") vm.sendConsoleInput(chunk);
    });
    socket.on("close", () => {
      unsubscribe();
      this.consoles.delete(socket);
    });
    socket.resume();
  }

  /** Destroys the VM, closes the socket, removes the run files, exits. */
  async shutdown(code: number, reason: string): Promise<void> {
    if (this.exiting) return;
    this.exiting = true;
    this.log.info({ reason }, "shutting down");
    for (const s of this.consoles) s.destroy();
    try {
      await this.vm?.destroy();
    } catch (err) {
      this.log.error({ err }, "error while destroying the VM");
    }
    try {
      await this.server?.close();
    } catch (err) {
      this.log.error({ err }, "error while closing the control socket");
    }
    if (this.vm) removeStale(this.vm.name);
    process.exit(code);
  }

  consoleTail(): string {
    return this.vm?.console.tailText(4096) ?? "";
  }
}

/** Entry point of the daemon process. */
export async function vmDaemonMain(configPath: string): Promise<void> {
  const log = daemonLogger(configPath);
  const daemon = new VmDaemon(configPath, log);
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
    process.on(sig, () => void daemon.shutdown(0, sig));
  }
  process.on("uncaughtException", (err) => {
    log.fatal({ err }, "uncaught exception");
    report({ type: "failed", error: `VM daemon crashed: ${err.message}`, consoleTail: daemon.consoleTail() });
    void daemon.shutdown(1, "uncaught exception");
  });
  try {
    await daemon.run();
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    log.error({ err }, "start failed");
    report({ type: "failed", error: message, consoleTail: daemon.consoleTail() });
    await daemon.shutdown(1, "start failed");
  }
  if (process.connected) process.disconnect();
}
