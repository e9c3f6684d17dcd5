/**
 * One object owns one QEMU process from spawn to reap (libvirt's
 * qemu_process.c is the model): a per-VM run directory it makes and
 * removes as a whole, the command line from a typed description, QEMU
 * started paused, QMP connected and negotiated, the commands probed once.
 * Every way it can end -- stop(), kill(), QEMU exiting, QMP closing under
 * a running QEMU -- goes through one place (`finish`) and resolves
 * `exited` once, after the process is reaped and the run dir is gone.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync } from "node:fs";
import { rm } from "node:fs/promises";
import { setPriority, tmpdir } from "node:os";
import { join } from "node:path";
import { buildQemuArgs, showArgs, type QemuMachine } from "./qemu-args.js";
import { QemuProcessError } from "./qemu-process-error.js";
import { waitForChild, type ChildExit } from "./child-exit.js";
import { findExecutable } from "./find-executable.js";
import { OutputTail } from "./output-tail.js";
import { QmpClient } from "./qmp-client.js";
import { QmpCommands } from "./qmp-commands.js";
import type { QemuVersion } from "./qmp-wire.js";
import { monotonicMs } from "../../sys/clock.js";
import { threadsOf } from "../../sys/index.js";

export const DEFAULT_QEMU_BINARY = "qemu-system-x86_64";
/** The Debian package that ships the binary, named in errors. */
export const QEMU_PACKAGE = "qemu-system-x86";
export const MIN_QEMU_VERSION = { major: 7, minor: 2 } as const;
const SETPRIV = { binary: "setpriv", package: "util-linux" } as const;
/** sun_path is 108 bytes with its NUL (linux/un.h UNIX_PATH_MAX). */
const UNIX_PATH_MAX = 108;

export interface QemuProcessOptions {
  vm: string;
  /** A name looked up on PATH, or a path (default qemu-system-x86_64). */
  binary?: string;
  /** Where the run dir is made (default the OS temp dir). */
  runDirParent?: string;
  /** Spawn to QMP ready (default 10 s). */
  startTimeoutMs?: number;
  /** stop(): how long `quit` and the exit after it may take before SIGKILL (default 3 s). */
  quitTimeoutMs?: number;
  /** Default timeout of QMP commands (default 10 s). */
  commandTimeoutMs?: number;
  /** QEMU gets SIGKILL when this process dies (`setpriv --pdeathsig`; default true). */
  dieWithParent?: boolean;
  env?: NodeJS.ProcessEnv;
  /**
   * A nice value for QEMU from its spawn on (before it makes its threads,
   * which inherit it): a standby QEMU starts in the background and should
   * not take CPU from the running guest's checkpoint. `setNice()` changes
   * every thread's later.
   */
  nice?: number;
}

export type QemuExitCause =
  | "stopped" // stop() or kill() asked for it
  | "exited" // QEMU exited by itself (guest poweroff, crash, killed from outside)
  | "monitor-closed" // QMP closed under a live QEMU: killed, a QEMU we cannot drive is gone
  | "start-failed"; // start() failed; the error says why

export interface QemuExit {
  vm: string;
  pid: number | undefined;
  cause: QemuExitCause;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** QEMU's last stderr/stdout lines. */
  outputTail: string;
  /** Set when the run dir could not be removed (everything else is gone). */
  cleanupError?: string;
}

type State = "created" | "starting" | "running" | "finishing" | "finished";

/** After QMP closes, how long a dying QEMU gets to exit by itself before SIGKILL. */
const MONITOR_CLOSED_GRACE_MS = 500;
const CONNECT_BACKOFF_MS = [2, 5, 10, 20, 40, 50] as const;
const RETRY_CONNECT = new Set(["ENOENT", "ECONNREFUSED"]);

export class QemuProcess {
  private state: State = "created";
  private child: ChildProcess | undefined;
  private childExit: Promise<ChildExit> | undefined;
  private childExited: ChildExit | undefined;
  private readonly output = new OutputTail();
  private client: QmpClient | undefined;
  private commandsValue: QmpCommands | undefined;
  private commandSet: ReadonlySet<string> = new Set();
  private argvValue: readonly string[] = [];
  private requested = false;
  private finishing: Promise<QemuExit> | undefined;
  private resolveExited: (e: QemuExit) => void = () => undefined;

  /** Resolves once: QEMU reaped, QMP closed, run dir removed. Never rejects. */
  readonly exited: Promise<QemuExit>;
  readonly qmpSocketPath: string;

  private constructor(
    private readonly opts: QemuProcessOptions,
    readonly runDir: string,
  ) {
    this.exited = new Promise((resolve) => (this.resolveExited = resolve));
    this.qmpSocketPath = join(runDir, "qmp.sock");
  }

  /** Makes the run dir (mode 0700); put the VM's sockets there (`path(name)`) before start(). */
  static create(opts: QemuProcessOptions): QemuProcess {
    const parent = opts.runDirParent ?? tmpdir();
    const tag = opts.vm.replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 32);
    let dir: string;
    try {
      mkdirSync(parent, { recursive: true, mode: 0o700 });
      dir = mkdtempSync(join(parent, `qemu-${tag}-`)); // mode 0700
    } catch (err) {
      throw new QemuProcessError(opts.vm, "RUN_DIR", `cannot make a QEMU run directory for ${opts.vm} under ${parent}: ${String(err)}`, { cause: err });
    }
    const proc = new QemuProcess(opts, dir);
    if (Buffer.byteLength(proc.qmpSocketPath) >= UNIX_PATH_MAX) {
      void rm(dir, { recursive: true, force: true });
      throw new QemuProcessError(opts.vm, "RUN_DIR", `QMP socket path ${proc.qmpSocketPath} of ${opts.vm} is longer than a unix socket path may be`);
    }
    return proc;
  }

  get vm(): string {
    return this.opts.vm;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** The command line QEMU was started with (binary first), for logs. */
  get argv(): readonly string[] {
    return this.argvValue;
  }

  /** A file or socket in the run dir (removed with it). */
  path(name: string): string {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name) || name === "qmp.sock") {
      throw new QemuProcessError(this.vm, "RUN_DIR", `${JSON.stringify(name)} is not a name for a file in ${this.vm}'s run dir`);
    }
    return join(this.runDir, name);
  }

  /** The QMP connection (after start()); its close is handled here. */
  get qmp(): QmpClient {
    if (this.client === undefined) throw new QemuProcessError(this.vm, "STATE", `QEMU of ${this.vm} has no QMP connection (not started)`);
    return this.client;
  }

  /** The typed QMP commands (after start()). */
  get commands(): QmpCommands {
    if (this.commandsValue === undefined) throw new QemuProcessError(this.vm, "STATE", `QEMU of ${this.vm} has no QMP connection (not started)`);
    return this.commandsValue;
  }

  /** QEMU's version, from the QMP greeting. */
  get version(): QemuVersion {
    return this.qmp.greeting.version;
  }

  /** Whether QEMU accepts `command` (from the one `query-commands` at start). */
  supports(command: string): boolean {
    return this.commandSet.has(command);
  }

  /** QEMU's last output lines (stderr and stdout). */
  outputTail(lines = 20): string {
    return this.output.lastLines(lines);
  }

  /**
   * Spawns QEMU paused with `machine`, waits for QMP, checks the version,
   * probes the commands. On failure nothing is left (process reaped, run
   * dir removed; `exited` resolves with "start-failed") and it throws.
   */
  async start(machine: QemuMachine): Promise<void> {
    if (this.state !== "created") throw new QemuProcessError(this.vm, "STATE", `QEMU of ${this.vm} cannot start: it is ${this.state}`);
    this.state = "starting";
    const started = monotonicMs();
    try {
      const env = this.opts.env ?? process.env;
      const binary = this.resolve(this.opts.binary ?? DEFAULT_QEMU_BINARY, QEMU_PACKAGE, env);
      const args = buildQemuArgs(this.vm, this.qmpSocketPath, machine);
      let argv = [binary, ...args];
      if (this.opts.dieWithParent ?? true) argv = [this.resolve(SETPRIV.binary, SETPRIV.package, env), "--pdeathsig", "SIGKILL", "--", ...argv];
      this.argvValue = argv;
      this.spawn(argv, env, machine.passFds ?? []);
      this.client = await this.connectQmp(started);
      this.checkVersion(this.client.greeting.version, binary);
      this.commandsValue = new QmpCommands(this.client);
      this.commandSet = await this.commandsValue.queryCommands({ timeoutMs: this.startTimeoutMs() });
    } catch (err) {
      await this.finish("start-failed");
      if (this.requested) throw new QemuProcessError(this.vm, "STATE", `QEMU of ${this.vm} was stopped during start`, { cause: err });
      if (err instanceof QemuProcessError) throw err;
      const why = err instanceof Error ? err.message : String(err);
      throw new QemuProcessError(this.vm, "QMP_FAILED", `QEMU of ${this.vm}: ${why}${this.tailSuffix()}`, { cause: err });
    }
    if (this.state !== "starting") {
      // stop() or kill() was called meanwhile: it has finished the process.
      throw new QemuProcessError(this.vm, "STATE", `QEMU of ${this.vm} was stopped during start`);
    }
    this.state = "running";
    this.client.onClose((info) => {
      if (!info.local) void this.onMonitorClosed();
    });
    // An exit seen while starting was left to start(); now it ends a running QEMU.
    if (this.childExited !== undefined) void this.finish("exited");
  }

  /** `quit` over QMP, SIGKILL if QEMU has not exited within quitTimeoutMs; reap; remove the run dir. Idempotent. */
  stop(): Promise<QemuExit> {
    if (this.finishing !== undefined) return this.finishing;
    this.requested = true;
    return this.finish("stopped", async () => {
      const budgetMs = this.opts.quitTimeoutMs ?? 3000;
      const started = monotonicMs();
      // Without a monitor (never started, still starting, or closed) there is nobody to ask: finish kills.
      if (this.commandsValue === undefined || this.commandsValue.client.isClosed || this.childExited !== undefined) return;
      // The reply may be lost when QEMU closes the socket: the exit is what counts.
      await this.commandsValue.quit({ timeoutMs: budgetMs }).catch(() => undefined);
      const leftMs = Math.max(0, budgetMs - (monotonicMs() - started));
      await this.waitExit(leftMs); // then finish() sends SIGKILL if it is still there
    });
  }

  /** SIGKILL at once; reap; remove the run dir. Idempotent (also during stop()). */
  kill(): Promise<QemuExit> {
    this.requested = true;
    this.signal("SIGKILL");
    return this.finishing ?? this.finish("stopped");
  }

  private startTimeoutMs(): number {
    return this.opts.startTimeoutMs ?? 10_000;
  }

  private resolve(name: string, pkg: string, env: NodeJS.ProcessEnv): string {
    const found = findExecutable(name, env.PATH ?? "");
    if (found.path !== undefined) return found.path;
    throw new QemuProcessError(this.vm, "BINARY_MISSING", `cannot start QEMU for ${this.vm}: ${found.why} (install Debian's ${pkg})`);
  }

  private spawn(argv: readonly string[], env: NodeJS.ProcessEnv, passFds: readonly number[]): void {
    const [file, ...args] = argv;
    if (file === undefined) throw new QemuProcessError(this.vm, "BAD_SPEC", `empty command line for ${this.vm}`);
    // Own process group: a terminal's ^C reaches us, and we decide QEMU's end.
    // passFds land at childFd(0), childFd(1), ... (setpriv keeps them: it execs QEMU without closing descriptors).
    const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe", ...passFds], detached: true, env });
    this.child = child;
    if (this.opts.nice !== undefined && child.pid !== undefined) this.renice([child.pid], this.opts.nice);
    child.stdout?.on("data", (d: Buffer) => this.output.push(d));
    child.stderr?.on("data", (d: Buffer) => this.output.push(d));
    this.childExit = waitForChild(child).then((exit) => {
      this.childExited = exit;
      if (this.state === "running" && !this.requested) void this.finish("exited");
      return exit;
    });
  }

  /** Every thread of QEMU at nice value `nice` (Linux's nice is per thread). */
  setNice(nice: number): void {
    const pid = this.child?.pid;
    if (pid === undefined) return;
    this.renice(threadsOf(pid), nice);
  }

  private renice(tids: readonly number[], nice: number): void {
    for (const tid of tids) {
      try {
        setPriority(tid, nice);
      } catch {
        // A thread that ended meanwhile; a refusal (no CAP_SYS_NICE to raise it back) leaves it as it was.
      }
    }
  }

  /** Connects to the QMP socket as soon as it accepts; fails fast when QEMU exits first. */
  private async connectQmp(started: number): Promise<QmpClient> {
    const timeoutMs = this.startTimeoutMs();
    let timedOut = false;
    let wake: () => void = () => undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      wake();
    }, timeoutMs);
    void this.childExit?.then(() => wake());
    try {
      for (let attempt = 0; ; attempt++) {
        if (this.childExited !== undefined) throw this.exitedAtStart(this.childExited);
        if (timedOut) break;
        try {
          return await QmpClient.connect({ vm: this.vm, path: this.qmpSocketPath, timeoutMs, commandTimeoutMs: this.opts.commandTimeoutMs });
        } catch (err) {
          const errno = err instanceof Error && "errno" in err ? err.errno : undefined;
          if (typeof errno !== "string" || !RETRY_CONNECT.has(errno)) {
            // QMP closing at startup is usually QEMU exiting: its exit status and stderr say more.
            if (await this.waitExit(MONITOR_CLOSED_GRACE_MS)) throw this.exitedAtStart(this.childExited ?? { code: null, signal: null });
            throw new QemuProcessError(this.vm, "QMP_FAILED", `QEMU of ${this.vm}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
          }
        }
        const delay = CONNECT_BACKOFF_MS[Math.min(attempt, CONNECT_BACKOFF_MS.length - 1)];
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, delay);
          wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
      }
    } finally {
      clearTimeout(timer);
    }
    const ms = monotonicMs() - started;
    throw new QemuProcessError(this.vm, "START_TIMEOUT", `QEMU of ${this.vm}: QMP socket ${this.qmpSocketPath} not ready after ${ms.toFixed(0)} ms${this.tailSuffix()}`);
  }

  private exitedAtStart(exit: ChildExit): QemuProcessError {
    const how = exit.signal !== null ? `killed by ${exit.signal}` : `exit code ${exit.code}`;
    const spawnWhy = exit.spawnError !== undefined ? `: ${exit.spawnError.message}` : "";
    return new QemuProcessError(this.vm, "START_FAILED", `QEMU of ${this.vm} exited at startup (${how})${spawnWhy}${this.tailSuffix()}`);
  }

  private tailSuffix(): string {
    const tail = this.output.lastLines(10);
    return tail === "" ? "" : `; QEMU said:\n${tail}`;
  }

  private checkVersion(v: QemuVersion, binary: string): void {
    const min = MIN_QEMU_VERSION;
    if (v.major > min.major || (v.major === min.major && v.minor >= min.minor)) return;
    throw new QemuProcessError(
      this.vm,
      "VERSION_TOO_OLD",
      `QEMU ${v.major}.${v.minor}.${v.micro} (${v.package || "no package string"}) at ${binary} is older than ${min.major}.${min.minor}, the oldest the qemu engine supports (VM ${this.vm})`,
    );
  }

  private async onMonitorClosed(): Promise<void> {
    if (this.state !== "running" || this.requested) return;
    if (await this.waitExit(MONITOR_CLOSED_GRACE_MS)) return; // its own exit finishes
    if (this.state !== "running" || this.requested) return;
    this.signal("SIGKILL");
    await this.finish("monitor-closed");
  }

  /** True when QEMU has exited (or never ran) within `ms`. */
  private async waitExit(ms: number): Promise<boolean> {
    if (this.childExit === undefined || this.childExited !== undefined) return true;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
    const done = await Promise.race([this.childExit.then(() => true as const), timeout]);
    clearTimeout(timer);
    return done;
  }

  private signal(sig: NodeJS.Signals): void {
    const child = this.child;
    if (child === undefined || this.childExited !== undefined || child.pid === undefined) return;
    try {
      child.kill(sig);
    } catch {
      // already gone: the exit is on its way
    }
  }

  /** The one end of every path: optional shutdown steps, then kill, reap, close, remove. Runs once. */
  private finish(cause: QemuExitCause, shutdown?: () => Promise<void>): Promise<QemuExit> {
    if (this.finishing !== undefined) return this.finishing;
    this.state = "finishing";
    this.finishing = (async () => {
      if (shutdown !== undefined) await shutdown();
      this.signal("SIGKILL"); // no-op when it has exited
      const exit = this.childExit !== undefined ? await this.childExit : undefined;
      this.client?.close();
      let cleanupError: string | undefined;
      try {
        await rm(this.runDir, { recursive: true, force: true });
      } catch (err) {
        cleanupError = `cannot remove the run dir ${this.runDir}: ${String(err)}`;
      }
      this.state = "finished";
      const result: QemuExit = {
        vm: this.vm,
        pid: this.child?.pid,
        cause,
        code: exit?.code ?? null,
        signal: exit?.signal ?? null,
        outputTail: this.output.lastLines(20),
        ...(cleanupError !== undefined ? { cleanupError } : {}),
      };
      this.resolveExited(result);
      return result;
    })();
    return this.finishing;
  }

  /** For logs: the command line as a shell would show it. */
  describe(): string {
    return showArgs(this.argvValue);
  }
}
