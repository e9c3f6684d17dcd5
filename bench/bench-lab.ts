/**
 * The lab pair a bench script runs on: its own lab (what an interrupted run
 * left removed first), a work folder with the key and the daemons'
 * COLO_RUN_DIR, `colo` in either host's namespace, the daemons' control
 * sockets, the protection toward the second host, and the cleanup (the
 * VM destroyed on both hosts, the lab down, the work folder removed).
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "../src/api/control-client.js";
import { vmRunFiles } from "../src/api/paths.js";
import { generateKeyFile } from "../src/channel/key.js";
import { labDown, labTopology, labUp, type LabTopology } from "../src/lab/lab.js";
import { COLO_BIN, run, runIn, type RunResult } from "../test/tools/run.js";
import { endSession } from "./lab-session.js";

/** Every CPU of this machine, as taskset lists them (an affinity put back). */
export const ALL_CPUS = `0-${availableParallelism() - 1}`;

/** Every thread of process `pid` on `cpus` (taskset's list). */
export async function pinProcess(pid: number, cpus: string): Promise<void> {
  const r = await run("taskset", ["-a", "-p", "-c", cpus, String(pid)]);
  if (r.code !== 0) throw new Error(`taskset ${pid}: ${r.stderr.trim()}`);
}

export class BenchLab {
  /** The primary's host (the VM is created there). */
  readonly h1: string;
  /** The secondary's host. */
  readonly h2: string;
  /** The daemons' COLO_RUN_DIR (a host's own below `netns/HOST`). */
  readonly runDir: string;
  /** The replication channel's key file. */
  readonly key: string;
  private closing: Promise<void> | undefined;

  private constructor(
    readonly topology: LabTopology,
    /** The VM's name on both hosts. */
    readonly name: string,
    /** The work folder: key, run folder, guest configs; removed by `close()`. */
    readonly work: string,
    /** The environment of every colo command (COLO_RUN_DIR and the caller's additions). */
    readonly env: NodeJS.ProcessEnv,
  ) {
    [this.h1, this.h2] = topology.hosts;
    this.runDir = join(work, "run");
    this.key = join(work, "key");
  }

  /**
   * A fresh work folder and key, lab `prefix` taken down (what an
   * interrupted run left) and brought up. `env` is added to the environment
   * of every colo command (e.g. COLO_DIRTY_LOG).
   */
  static async open(opts: { prefix: string; name: string; env?: NodeJS.ProcessEnv }): Promise<BenchLab> {
    const work = mkdtempSync(join(tmpdir(), `colo-${opts.name}-`));
    const lab = new BenchLab(labTopology(opts.prefix), opts.name, work, { ...process.env, ...opts.env, COLO_RUN_DIR: join(work, "run") });
    try {
      generateKeyFile(lab.key);
      await labDown({ prefix: lab.topology.prefix });
      await labUp({ prefix: lab.topology.prefix });
    } catch (err) {
      await lab.close();
      throw err;
    }
    return lab;
  }

  /** `colo ARGS` in `host`'s namespace, with this lab's environment. */
  colo(host: string, args: string[]): Promise<RunResult> {
    return runIn(host, COLO_BIN, args, { env: this.env, timeoutMs: 600_000 });
  }

  /** `colo ARGS` on `host`; a non-zero exit throws `WHAT: stderr`. */
  async must(what: string, args: string[], host = this.h1): Promise<RunResult> {
    const r = await this.colo(host, args);
    if (r.code !== 0) throw new Error(`${what}: ${r.stderr.trim()}`);
    return r;
  }

  /** The control socket of the VM's daemon on `host`. */
  socket(host: string): string {
    return vmRunFiles(this.name, join(this.runDir, "netns", host)).socket;
  }

  /** The daemon's status on `host`, straight from its control socket (what `colo status` prints, without a CLI process). */
  async status<T>(host = this.h1): Promise<T> {
    return (await request(this.socket(host), { op: "status" })) as T;
  }

  /**
   * Every thread of `host`'s daemon and engine on `cpus` (taskset's list,
   * `taskset -a -p`). Processes the daemon starts later (a qemu secondary's
   * standby QEMUs) inherit its affinity.
   */
  async pin(host: string, cpus: string): Promise<void> {
    const s = await this.status<{ pid: number; enginePid?: number }>(host);
    for (const pid of [s.pid, s.enginePid].filter((p): p is number => p !== undefined)) await pinProcess(pid, cpus);
  }

  /** Two hosts' work kept apart on one machine: the primary's daemon and engine on CPU 0, the secondary's on CPU 1. */
  async pinApart(): Promise<void> {
    await this.pin(this.h1, "0");
    await this.pin(this.h2, "1");
  }

  /** `colo migrate-receive --colo --detach` on the second host; resolves once it has detached (listening). */
  async listenSecondary(): Promise<void> {
    const recv = spawn("ip", ["netns", "exec", this.h2, COLO_BIN, "migrate-receive", "--colo", "--listen", this.topology.replIps[1], "--key-file", this.key, "--detach"], { env: this.env, stdio: "ignore" });
    await new Promise<void>((resolve, reject) => recv.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`migrate-receive --colo exited ${code}`)))));
  }

  /** Protects the VM in COLO compare mode toward the second host: `colo migrate --colo NAME IP --key-file KEY ...extraArgs` on the first. */
  async protect(extraArgs: string[] = []): Promise<RunResult> {
    await this.listenSecondary();
    return this.must("migrate --colo", ["migrate", "--colo", this.name, this.topology.replIps[1], "--key-file", this.key, ...extraArgs]);
  }

  /** Protects the VM in Remus mode toward the second host, a checkpoint every `intervalMs`. */
  async remus(intervalMs: number): Promise<RunResult> {
    await this.listenSecondary();
    return this.must("remus", ["remus", this.name, this.topology.replIps[1], "--key-file", this.key, "--interval", String(intervalMs)]);
  }

  /** Ends the protected session in order (lab-session.ts `endSession`): the first host runs on unprotected. */
  endSession(): Promise<void> {
    return endSession((host, args) => this.colo(host, args), this.h1, this.h2, this.name);
  }

  /** Destroys the VM on both hosts, takes the lab down and removes the work folder; errors ignored, once however often called. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const h of this.topology.hosts) await this.colo(h, ["destroy", this.name]).catch(() => undefined);
      await labDown({ prefix: this.topology.prefix }).catch(() => undefined);
      try {
        rmSync(this.work, { recursive: true, force: true });
      } catch {
        // a work folder left behind is not worth failing the run for
      }
    })();
    return this.closing;
  }
}
