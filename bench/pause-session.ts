/**
 * One guest protected in COLO compare mode on a lab pair, for measuring
 * checkpoint pauses (pause.ts, ram-curve.ts): periodic checkpoints off, one
 * Redis string of many pages allocated before the protection, then per
 * sample N of its pages dirtied and an operator checkpoint asked on the
 * primary's control socket; the primary's `lastPauseBreakdownMs` and the
 * secondary's phases read after it.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { labDown, labTopology, labUp } from "../src/lab/lab.js";
import { generateKeyFile } from "../src/channel/key.js";
import { request } from "../src/api/control-client.js";
import { vmRunFiles } from "../src/api/paths.js";
import { COLO_BIN, runIn } from "../test/tools/run.js";
import { writeGuestConfig } from "../test/tools/guest-fixture.js";
import { redisFrom } from "../test/tools/lab-fixture.js";
import { allocateDirtyBuffer, dirtyPages } from "./dirty-pages.js";
import { endSession } from "./lab-session.js";

interface Replication {
  checkpoints: number;
  lastPauseMs: number;
  lastCommitMs?: number;
  pagesPerCheckpoint: number;
  lastPauseBreakdownMs?: Record<string, number>;
}

export interface PauseSample {
  pauseMs: number;
  commitMs: number;
  pages: number;
  primary: Record<string, number>;
  secondary: Record<string, number>;
}

export interface Spread {
  n: number;
  median: number;
  p99: number;
  max: number;
  min: number;
}

export function spread(values: number[]): Spread {
  const s = values.filter(Number.isFinite).sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(s.length * q))] ?? NaN;
  return { n: s.length, median: at(0.5), p99: at(0.99), max: s[s.length - 1] ?? NaN, min: s[0] ?? NaN };
}

/** Per phase name: the median over the samples. */
function medians(samples: PauseSample[], side: "primary" | "secondary"): Record<string, number> {
  const names = new Set(samples.flatMap((s) => Object.keys(s[side])));
  const out: Record<string, number> = {};
  for (const n of names) out[n] = spread(samples.map((s) => s[side][n] ?? NaN)).median;
  return out;
}

/** What a series of samples at one size comes to. */
export function pauseSummary(dirtied: number, samples: PauseSample[]) {
  return {
    dirtied,
    samples: samples.length,
    pauseMs: spread(samples.map((s) => s.pauseMs)),
    commitMs: spread(samples.map((s) => s.commitMs)),
    pages: spread(samples.map((s) => s.pages)),
    primaryPhasesMedianMs: medians(samples, "primary"),
    secondaryPhasesMedianMs: medians(samples, "secondary"),
  };
}

export class PauseSession {
  private seq = 0;

  private constructor(
    private readonly work: string,
    private readonly prefix: string,
    private readonly hosts: readonly [string, string],
    private readonly name: string,
    private readonly runDir: string,
    private readonly env: NodeJS.ProcessEnv,
    private readonly clientNs: string,
    private readonly guestIp: string,
    /** Checkpoint 0 (the protection's start) as the primary reported it. */
    readonly checkpoint0: { pauseMs: number | null; commitMs: number | null; pages: number | null },
    /** The last line `colo migrate --colo` printed. */
    readonly startLine: string,
  ) {}

  /**
   * Brings lab `prefix` up, boots the guest (`memoryMiB`, or the engine's
   * default) on its first host, allocates `bufferPages` pages in Redis and
   * protects it toward the second host.
   */
  static async open(opts: { prefix: string; name: string; mac: string; bufferPages: number; memoryMiB?: number; env?: NodeJS.ProcessEnv }): Promise<PauseSession> {
    const lab = labTopology(opts.prefix);
    const [h1, h2] = lab.hosts;
    const work = mkdtempSync(join(tmpdir(), `colo-${opts.prefix}-`));
    const runDir = join(work, "run");
    const env = { ...process.env, ...opts.env, COLO_RUN_DIR: runDir };
    const key = join(work, "key");
    generateKeyFile(key);
    await labDown({ prefix: lab.prefix }); // what an interrupted run left
    await labUp({ prefix: lab.prefix });
    const colo = (host: string, args: string[]) => runIn(host, COLO_BIN, args, { env, timeoutMs: 600_000 });
    const must = async (what: string, args: string[], host = h1) => {
      const r = await colo(host, args);
      if (r.code !== 0) throw new Error(`${what}: ${r.stderr.trim()}`);
      return r;
    };
    const redis = (...args: string[]) => redisFrom(lab.namespaces.client, lab.guestIp, args);
    try {
      const cfg = writeGuestConfig({
        dir: join(work, "guest"),
        name: opts.name,
        ip: `${lab.guestIp}/24`,
        mac: opts.mac,
        bridge: lab.hostBridge,
        ...(opts.memoryMiB !== undefined ? { memoryMiB: opts.memoryMiB } : {}),
      });
      // A guest that does not fit its RAM never gets ready: 180 s, not the default 300 (emu boots in ~30 s here).
      await must("create", ["create", cfg.cfg, "--timeout", "180"]);
      // Its pages go with checkpoint 0.
      await allocateDirtyBuffer(redis, opts.bufferPages);
      const recv = spawn("ip", ["netns", "exec", h2, COLO_BIN, "migrate-receive", "--colo", "--listen", lab.replIps[1], "--key-file", key, "--detach"], { env, stdio: "ignore" });
      await new Promise<void>((resolve, reject) => recv.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`migrate-receive --colo exited ${code}`)))));
      const start = await must("migrate --colo", ["migrate", "--colo", opts.name, lab.replIps[1], "--key-file", key, "--checkpoint-max-interval", "3600000"]);
      const socket = vmRunFiles(opts.name, join(runDir, "netns", h1)).socket;
      const c0 = ((await request(socket, { op: "status" })) as { replication?: Replication }).replication;
      return new PauseSession(
        work,
        lab.prefix,
        [h1, h2],
        opts.name,
        runDir,
        env,
        lab.namespaces.client,
        lab.guestIp,
        { pauseMs: c0?.lastPauseMs ?? null, commitMs: c0?.lastCommitMs ?? null, pages: c0?.pagesPerCheckpoint ?? null },
        start.stdout.trim().split("\n").pop() ?? "",
      );
    } catch (err) {
      for (const h of lab.hosts) await colo(h, ["destroy", opts.name]).catch(() => undefined);
      await labDown({ prefix: lab.prefix }).catch(() => undefined);
      rmSync(work, { recursive: true, force: true });
      throw err;
    }
  }

  /** Straight to the daemons' control sockets: a CLI process per sample would cost more than some pauses. */
  private socket(host: string): string {
    return vmRunFiles(this.name, join(this.runDir, "netns", host)).socket;
  }

  private async replication(host: string): Promise<Replication | undefined> {
    return ((await request(this.socket(host), { op: "status" })) as { replication?: Replication }).replication;
  }

  /** How the primary's engine finds dirty pages (status `dirtyLog`), if it says. */
  async dirtyLog(): Promise<unknown> {
    return ((await request(this.socket(this.hosts[0]), { op: "status" })) as { dirtyLog?: unknown }).dirtyLog ?? null;
  }

  /** The primary's checkpoint count. */
  async checkpoints(): Promise<number | null> {
    return (await this.replication(this.hosts[0]))?.checkpoints ?? null;
  }

  /** `pages` pages dirtied (a new tag each time), then one operator checkpoint. */
  async sample(pages: number): Promise<PauseSample> {
    const redis = (...args: string[]) => redisFrom(this.clientNs, this.guestIp, args);
    await dirtyPages(redis, pages, `t${String(this.seq++).padStart(7, "0")}`);
    const cp = (await request(this.socket(this.hosts[0]), { op: "checkpoint", verifyDisks: false }, 120_000)) as { checkpoint: number; pauseMs: number; commitMs?: number };
    const p = await this.replication(this.hosts[0]);
    const s = await this.replication(this.hosts[1]);
    return { pauseMs: cp.pauseMs, commitMs: cp.commitMs ?? NaN, pages: p?.pagesPerCheckpoint ?? NaN, primary: p?.lastPauseBreakdownMs ?? {}, secondary: s?.lastPauseBreakdownMs ?? {} };
  }

  /** Ends the protection in order, destroys the VMs, takes the lab down and removes the work folder. */
  async close(): Promise<void> {
    const colo = (host: string, args: string[]) => runIn(host, COLO_BIN, args, { env: this.env, timeoutMs: 600_000 });
    try {
      await endSession(colo, this.hosts[0], this.hosts[1], this.name);
    } finally {
      for (const h of this.hosts) await colo(h, ["destroy", this.name]).catch(() => undefined);
      await labDown({ prefix: this.prefix }).catch(() => undefined);
      rmSync(this.work, { recursive: true, force: true });
    }
  }
}
