/**
 * A protected pair in the lab (integration tests of replication): the
 * primary on host h1, the secondary on h2, the client namespace for
 * clients. One VM name per test file; each file uses its own lab prefix.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess, type ChildProcessWithoutNullStreams } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { vmRunFiles } from "../../src/api/paths.js";
import type { LabTopology } from "../../src/lab/topology.js";
import { COLO_BIN, REPO_ROOT, runIn, type RunResult } from "./run.js";
import { redisFrom } from "./lab-fixture.js";

export interface ReplicationStatus {
  mode: string;
  /** HOST:PORT of the other side. */
  peer?: string;
  replication: string;
  checkpoints: number;
  discardedCheckpoints: number;
  failovers: { role: string; reason: string }[];
  checkpointReasons?: Record<string, number>;
}

export interface VmStatusJson {
  pid: number;
  /** qemu: the running QEMU's pid. */
  enginePid?: number;
  /** How late the daemon's event loop has run since it started (src/api/loop-delay.ts). */
  eventLoopDelay?: { maxMs: number; p99Ms: number; meanMs: number; samples: number };
  state: string;
  /** The exclusive operation in progress ("starting replication", "migrating", ...). */
  busy?: string;
  replication?: ReplicationStatus;
  proxy?: Record<string, unknown>;
  /** Remus: the output buffer; compare mode: the comparator's counters. */
  heldOutput?: Record<string, unknown>;
  /** A survivor's TCP translations at its NIC: one layer per takeover (src/colo/net/link-translation.ts). */
  linkTranslation?: { layers: number; connections: number };
  /** `--reprotect`: the automatic re-protection (src/api/daemon-reprotect.ts). */
  reprotect?: { to: string; state: string; attempts: number; lastError?: string; after: string };
}

/** test/tools/incr-client.ts's summary; `first` and `last` are null when nothing was acknowledged. */
export interface IncrResult {
  acked: number;
  first: number | null;
  last: number | null;
  gaps: number;
  errors: string[];
  connectionResets: number;
  maxReplyMs: number;
}

export class Pair {
  /** `colo arbiter` in the lan namespace, when started. */
  private arbiter: ChildProcess | undefined;
  /** An arbiter the test runs itself (an etcd cluster: "etcd://..."), used instead of `colo arbiter`. */
  private arbiterAddress: string | undefined;
  readonly h1: string;
  readonly h2: string;
  readonly client: string;
  readonly ip: string;

  constructor(
    readonly lab: LabTopology,
    readonly name: string,
    private readonly runDir: string,
    readonly keyFile: string,
  ) {
    const [h1, h2] = lab.hosts;
    this.h1 = h1;
    this.h2 = h2;
    this.client = lab.namespaces.client;
    this.ip = lab.guestIp;
  }

  env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
    return { ...process.env, COLO_RUN_DIR: this.runDir, ...extra };
  }

  colo(host: string, args: string[], extraEnv: NodeJS.ProcessEnv = {}, timeoutMs = 300_000): Promise<RunResult> {
    return runIn(host, COLO_BIN, args, { env: this.env(extraEnv), timeoutMs });
  }

  redis(...args: string[]): Promise<string> {
    return redisFrom(this.client, this.ip, args);
  }

  /** The INCR client's counter as the guest holds it; fails when the key is missing (GET would read as 0) or not a count. */
  async incrCount(key = "colo:incr"): Promise<number> {
    const v = await this.redis("GET", key);
    assert.match(v, /^\d+$/, `${key} should hold a count: ${JSON.stringify(v)}`);
    return Number(v);
  }

  async status(host: string): Promise<VmStatusJson> {
    const r = await this.colo(host, ["status", this.name]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as VmStatusJson;
  }

  /** The last `lines` lines of each host's daemon log for this VM (what a failed test prints). */
  logTails(lines = 40): string {
    return this.lab.hosts
      .map((h) => {
        const file = vmRunFiles(this.name, join(this.runDir, "netns", h)).log;
        let text: string;
        try {
          text = readFileSync(file, "utf8");
        } catch (e) {
          text = `(no log: ${(e as Error).message})`;
        }
        return `--- ${h}: ${file}\n${text.split("\n").slice(-lines).join("\n")}`;
      })
      .join("\n");
  }

  /** Runs `fn`; when it throws, the error's message gets both daemons' log tails, so a CI log says what happened. */
  async explained<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof Error) e.message += `\n${this.logTails()}`;
      throw e;
    }
  }

  async destroyAll(): Promise<void> {
    for (const h of this.lab.hosts) await this.colo(h, ["destroy", this.name]).catch(() => undefined);
  }

  /** Starts `colo arbiter` on the lab's arbiter address; protect() then passes --arbiter to both sides. */
  async startArbiter(): Promise<void> {
    if (this.arbiter) return;
    const child = spawn("ip", ["netns", "exec", this.lab.namespaces.lan, COLO_BIN, "arbiter", "--listen", this.lab.arbiterIp, "--key-file", this.keyFile], {
      env: this.env(),
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.arbiter = child;
    await new Promise<void>((resolve, reject) => {
      let out = "";
      child.stdout?.on("data", (c: Buffer) => {
        out += c.toString();
        if (out.includes("arbiter listening")) resolve();
      });
      child.on("close", (code) => reject(new Error(`colo arbiter exited ${code}: ${out}`)));
    });
  }

  async stopArbiter(): Promise<void> {
    const child = this.arbiter;
    this.arbiter = undefined;
    if (!child || child.exitCode !== null) return;
    const closed = new Promise<void>((resolve) => child.on("close", () => resolve()));
    child.kill("SIGTERM");
    await closed;
  }

  /** Both sides hold their lease in `address` (e.g. an etcd cluster's etcd://...) from now on. */
  useArbiter(address: string): void {
    this.arbiterAddress = address;
  }

  /** `--arbiter ADDR` when the pair runs one. */
  arbiterArgs(): string[] {
    if (this.arbiterAddress) return ["--arbiter", this.arbiterAddress];
    return this.arbiter ? ["--arbiter", this.lab.arbiterIp] : [];
  }

  /** `colo migrate-receive --colo --detach` on h2 (or, to protect a survivor on h2 again, on h1), with `extra` options; resolves once it listens. */
  async listenSecondary(on: "h1" | "h2" = "h2", extra: string[] = []): Promise<void> {
    const [host, ip] = on === "h2" ? [this.h2, this.lab.replIps[1]] : [this.h1, this.lab.replIps[0]];
    const recv = spawn("ip", ["netns", "exec", host, COLO_BIN, "migrate-receive", "--colo", "--listen", ip, "--key-file", this.keyFile, "--timeout", "120", "--detach", ...this.arbiterArgs(), ...extra], {
      env: this.env(),
      stdio: ["ignore", "pipe", "pipe"],
    });
    await new Promise<void>((resolve, reject) => {
      let out = "";
      let err = "";
      recv.stdout.on("data", (c: Buffer) => (out += c.toString()));
      recv.stderr.on("data", (c: Buffer) => (err += c.toString()));
      recv.on("close", (code) => (code === 0 && out.includes("listening on") ? resolve() : reject(new Error(`migrate-receive --colo: ${out} ${err}`))));
    });
  }

  /**
   * Boots `cfg` on h1 and protects it: `args` are the protecting verb and
   * its options after the VM name and destination, e.g. ["remus", "--interval", "100"]
   * or ["migrate", "--colo"].
   */
  async protect(cfg: string, verb: string[], opts: { extraEnv?: NodeJS.ProcessEnv; secondaryConfig?: string } = {}): Promise<RunResult> {
    await this.createPrimary(cfg, opts.extraEnv);
    const r = await this.startProtection(verb, opts);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await this.status(this.h2)).replication?.mode, "secondary");
    return r;
  }

  /** The VM on h1 from `cfg`, unprotected (whatever the pair ran before is destroyed first). */
  async createPrimary(cfg: string, extraEnv?: NodeJS.ProcessEnv): Promise<void> {
    await this.destroyAll();
    const created = await this.colo(this.h1, ["create", cfg], extraEnv);
    assert.equal(created.code, 0, created.stderr);
  }

  /** A secondary waiting on h2, and the protecting command on h1 (`verb`: e.g. ["migrate", "--colo"]); resolves when that command ends. */
  async startProtection(verb: string[], opts: { extraEnv?: NodeJS.ProcessEnv; secondaryConfig?: string } = {}): Promise<RunResult> {
    await this.listenSecondary();
    const [cmd, ...rest] = verb;
    const args = [cmd ?? "remus", this.name, this.lab.replIps[1], "--key-file", this.keyFile, ...rest, ...(opts.secondaryConfig ? ["-C", opts.secondaryConfig] : []), ...this.arbiterArgs()];
    return this.colo(this.h1, args, opts.extraEnv);
  }

  /** The INCR client (test/tools/incr-client.ts) on one connection from the client namespace, on `key`. */
  startIncr(seconds = 240, key = "colo:incr"): { child: ChildProcessWithoutNullStreams; firstReply: Promise<void>; result: () => Promise<IncrResult> } {
    const child = spawn("ip", ["netns", "exec", this.client, process.execPath, join(REPO_ROOT, "dist/test/tools/incr-client.js"), "--host", this.ip, "--seconds", String(seconds), "--key", key], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    const closed = new Promise<void>((resolve) => child.on("close", () => resolve()));
    let err = "";
    const firstReply = new Promise<void>((resolve, reject) => {
      child.stderr.on("data", (c: Buffer) => {
        err += c.toString();
        if (err.includes("incr-client: first reply")) resolve();
      });
      void closed.then(() => reject(new Error(`the INCR client on ${key} ended before its first reply: ${out} ${err}`)));
    });
    firstReply.catch(() => undefined);
    return {
      child,
      firstReply,
      result: async () => {
        child.stdin.end();
        await closed;
        return JSON.parse(out) as IncrResult;
      },
    };
  }
}

/** Polls `fn` until it holds; `what` may be a function, evaluated at the failure (to show the last values seen). Monotonic clock. */
export async function waitFor(what: string | (() => string), fn: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const start = process.hrtime.bigint();
  while (Number(process.hrtime.bigint() - start) / 1e6 < timeoutMs) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`${typeof what === "string" ? what : what()}: not within ${timeoutMs} ms`);
}
