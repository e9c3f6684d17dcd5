/**
 * One guest protected in COLO compare mode on a lab pair, for measuring
 * checkpoint pauses (pause.ts, ram-curve.ts): periodic checkpoints off, one
 * Redis string of many pages allocated before the protection, then per
 * sample N of its pages dirtied and an operator checkpoint asked on the
 * primary's control socket; the primary's `lastPauseBreakdownMs` and the
 * secondary's phases read after it.
 */
import { join } from "node:path";
import { request } from "../src/api/control-client.js";
import { writeGuestConfig } from "../test/tools/guest-fixture.js";
import { redisFrom } from "../test/tools/lab-fixture.js";
import { BenchLab } from "./bench-lab.js";
import { allocateDirtyBuffer, dirtyPages } from "./dirty-pages.js";

interface Replication {
  checkpoints: number;
  lastPauseMs: number;
  lastEngineStoppedMs?: number;
  lastCommitMs?: number;
  pagesPerCheckpoint: number;
  lastPauseBreakdownMs?: Record<string, number>;
}

export interface PauseSample {
  pauseMs: number;
  /** The vCPUs' own stop as the engine timed it (qemu: QEMU's STOP to RESUME events), when it knows. */
  engineStoppedMs?: number;
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

/** Per phase name: the median (or p99) over the samples. */
function phaseFigure(samples: PauseSample[], side: "primary" | "secondary", figure: "median" | "p99"): Record<string, number> {
  const names = new Set(samples.flatMap((s) => Object.keys(s[side])));
  const out: Record<string, number> = {};
  for (const n of names) out[n] = spread(samples.map((s) => s[side][n] ?? NaN))[figure];
  return out;
}

/** The primary's phases, median over the slowest 1% of samples by pause: where a p99 pause goes. */
function slowestPhases(samples: PauseSample[]): Record<string, number> {
  const slow = [...samples].sort((a, b) => b.pauseMs - a.pauseMs).slice(0, Math.max(1, Math.ceil(samples.length / 100)));
  return phaseFigure(slow, "primary", "median");
}

/** What a series of samples at one size comes to. */
export function pauseSummary(dirtied: number, samples: PauseSample[]) {
  return {
    dirtied,
    samples: samples.length,
    pauseMs: spread(samples.map((s) => s.pauseMs)),
    /** The same pauses on the engine's clock (qemu: QEMU's STOP to RESUME; absent on engines that do not time it). */
    ...(samples.some((s) => s.engineStoppedMs !== undefined) ? { engineStoppedMs: spread(samples.map((s) => s.engineStoppedMs ?? NaN)) } : {}),
    commitMs: spread(samples.map((s) => s.commitMs)),
    pages: spread(samples.map((s) => s.pages)),
    primaryPhasesMedianMs: phaseFigure(samples, "primary", "median"),
    primaryPhasesP99Ms: phaseFigure(samples, "primary", "p99"),
    /** The primary's phases in the slowest 1% of pauses (median over them). */
    primaryPhasesSlowestMs: slowestPhases(samples),
    /** The 10 slowest pauses themselves, each with both sides' phases. */
    slowest: [...samples].sort((a, b) => b.pauseMs - a.pauseMs).slice(0, 10),
    secondaryPhasesMedianMs: phaseFigure(samples, "secondary", "median"),
  };
}

export class PauseSession {
  private seq = 0;

  private constructor(
    /** The lab pair the session runs on. */
    readonly lab: BenchLab,
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
    const lab = await BenchLab.open({ prefix: opts.prefix, name: opts.name, env: opts.env });
    const { topology } = lab;
    const redis = (...args: string[]) => redisFrom(topology.namespaces.client, topology.guestIp, args);
    try {
      const cfg = writeGuestConfig({
        dir: join(lab.work, "guest"),
        name: opts.name,
        ip: `${topology.guestIp}/24`,
        mac: opts.mac,
        bridge: topology.hostBridge,
        ...(opts.memoryMiB !== undefined ? { memoryMiB: opts.memoryMiB } : {}),
      });
      // A guest that does not fit its RAM never gets ready: 180 s, not the default 300 (emu boots in ~30 s here).
      await lab.must("create", ["create", cfg.cfg, "--timeout", "180"]);
      // Its pages go with checkpoint 0.
      await allocateDirtyBuffer(redis, opts.bufferPages);
      const start = await lab.protect(["--checkpoint-max-interval", "3600000"]);
      const c0 = (await lab.status<{ replication?: Replication }>(lab.h1)).replication;
      return new PauseSession(lab, { pauseMs: c0?.lastPauseMs ?? null, commitMs: c0?.lastCommitMs ?? null, pages: c0?.pagesPerCheckpoint ?? null }, start.stdout.trim().split("\n").pop() ?? "");
    } catch (err) {
      await lab.close();
      throw err;
    }
  }

  private async replication(host: string): Promise<Replication | undefined> {
    return (await this.lab.status<{ replication?: Replication }>(host)).replication;
  }

  /** How the primary's engine finds dirty pages (status `dirtyLog`), if it says. */
  async dirtyLog(): Promise<unknown> {
    return (await this.lab.status<{ dirtyLog?: unknown }>(this.lab.h1)).dirtyLog ?? null;
  }

  /** The primary's checkpoint count. */
  async checkpoints(): Promise<number | null> {
    return (await this.replication(this.lab.h1))?.checkpoints ?? null;
  }

  /**
   * `pages` pages dirtied (a new tag each time), then one operator
   * checkpoint, straight to the daemons' control sockets: a CLI process per
   * sample would cost more than some pauses.
   */
  async sample(pages: number): Promise<PauseSample> {
    const redis = (...args: string[]) => redisFrom(this.lab.topology.namespaces.client, this.lab.topology.guestIp, args);
    await dirtyPages(redis, pages, `t${String(this.seq++).padStart(7, "0")}`);
    const cp = (await request(this.lab.socket(this.lab.h1), { op: "checkpoint", verifyDisks: false }, 120_000)) as { checkpoint: number; pauseMs: number; commitMs?: number };
    const p = await this.replication(this.lab.h1);
    const s = await this.replication(this.lab.h2);
    return {
      pauseMs: cp.pauseMs,
      ...(p?.lastEngineStoppedMs !== undefined ? { engineStoppedMs: p.lastEngineStoppedMs } : {}),
      commitMs: cp.commitMs ?? NaN,
      pages: p?.pagesPerCheckpoint ?? NaN,
      primary: p?.lastPauseBreakdownMs ?? {},
      secondary: s?.lastPauseBreakdownMs ?? {},
    };
  }

  /** Ends the protection in order, destroys the VMs, takes the lab down and removes the work folder. */
  async close(): Promise<void> {
    try {
      await this.lab.endSession();
    } finally {
      await this.lab.close();
    }
  }
}
