/**
 * What bench/engine-run.ts measures on one engine and bench/engines.ts
 * puts side by side: the shapes of the figures, and the pure arithmetic on
 * them (spreads, ratios, issue 12's targets). No VM here: unit-tested in
 * engine-figures.test.ts.
 */
import type { RedisBenchFigure } from "./redis-benchmark.js";
import type { MigrationFigure } from "./lab-session.js";

export type EngineId = "emu" | "qemu";
export const ENGINE_IDS: readonly EngineId[] = ["emu", "qemu"];

export function isEngineId(v: string): v is EngineId {
  return (ENGINE_IDS as readonly string[]).includes(v);
}

/** The lab (its own prefix) and the VM name of the engines bench. */
export const ENGINES_LAB_PREFIX = "cbeng";
export const ENGINES_VM_NAME = "beng";
/** Remus mode's checkpoint interval in this bench. */
export const REMUS_INTERVAL_MS = 100;

/** A phase's outcome: its figures, or why it failed (a failed phase does not stop the others). */
export type Phase<T> = { ok: true; seconds: number; figures: T } | { ok: false; seconds: number; error: string };

export interface Spread {
  n: number;
  min: number;
  median: number;
  max: number;
}

/** min / median / max of the numbers (NaN ignored); undefined when there are none. */
export function spread(values: readonly number[]): Spread | undefined {
  const xs = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (xs.length === 0) return undefined;
  const mid = Math.floor(xs.length / 2);
  const median = xs.length % 2 === 1 ? (xs[mid] ?? NaN) : ((xs[mid - 1] ?? NaN) + (xs[mid] ?? NaN)) / 2;
  return { n: xs.length, min: xs[0] ?? NaN, median: round(median, 1), max: xs[xs.length - 1] ?? NaN };
}

function round(v: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

/** One redis-benchmark figure without its key (the table's key names test and clients). */
export type RedisCell = Omit<RedisBenchFigure, "test" | "clients">;
/** redis-benchmark figures keyed "SET c=16". */
export type RedisTable = Record<string, RedisCell>;

export function redisTable(figures: readonly RedisBenchFigure[]): RedisTable {
  const t: RedisTable = {};
  for (const f of figures) t[`${f.test} c=${f.clients}`] = { requests: f.requests, opsPerSec: f.opsPerSec, avgMs: f.avgMs, p50Ms: f.p50Ms, p99Ms: f.p99Ms, maxMs: f.maxMs };
  return t;
}

/** ops/s of `t` over `base`, per key both have (3 decimals). */
export function opsRatios(t: RedisTable, base: RedisTable): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, cell] of Object.entries(t)) {
    const b = base[k]?.opsPerSec;
    if (b !== undefined && b > 0) out[k] = round(cell.opsPerSec / b, 3);
  }
  return out;
}

export interface BootFigures {
  /** `colo create` called until it returned (guest ready: Redis answers). */
  bootToReadyMs: number;
  /** What the daemon measured (`ready in N s`, 0.1 s steps); null when not printed. */
  guestBootMs: number | null;
}

export interface UnprotectedFigures {
  warmupRequests: number;
  redis: RedisTable;
}

export interface ProtectedFigures {
  verb: string;
  /** `colo migrate --colo` / `colo remus` until it returned (checkpoint 0 taken). */
  startMs: number;
  warmupRequests: number;
  redis: RedisTable;
  /** ops/s over the unprotected run of this engine, same run; empty when that run failed. */
  vsUnprotected: Record<string, number>;
  seconds: number;
  checkpoints: number;
  checkpointsPerMinute: number;
  checkpointReasons: Record<string, number>;
  p99PauseMs: number;
}

/** One operator checkpoint after roughly `requestedPages` pages were dirtied. */
export interface PauseSample {
  checkpoint: number;
  /** `colo checkpoint`'s pauseMs. */
  pauseMs: number;
  /** status: replication.lastPauseMs (the same checkpoint when sameCheckpoint). */
  statusPauseMs: number;
  /** status: replication.pagesPerCheckpoint (PVM and SVM dirty pages, their union). */
  pages: number;
  /** The status seen was of this checkpoint on both sides (no other checkpoint came between). */
  sameCheckpoint: boolean;
  /** The primary's lastPauseBreakdownMs: new, svmSuspended (the PVM runs), pause, pvmDirty, pages, saveState, resume, send, svmReady. */
  breakdownMs: Record<string, number>;
  /** The secondary's lastPauseBreakdownMs: applyPages, loadState. */
  secondaryMs: Record<string, number>;
  /** The primary's saveState + the secondary's loadState; null when either is missing. */
  deviceStateMs: number | null;
  /** How long the EVAL that dirtied the pages took (client side). */
  dirtyMs: number;
}

export interface PauseSize {
  requestedPages: number;
  samples: PauseSample[];
  pauseMs: Spread | undefined;
  pages: Spread | undefined;
  breakdownMs: Record<string, Spread>;
  secondaryMs: Record<string, Spread>;
  deviceStateMs: Spread | undefined;
}

export interface PauseFigures {
  checkpointMaxIntervalMs: number;
  /** Pages of the Redis string whose pages the EVAL writes into. */
  bufferPages: number;
  /** Keyed by the requested page count. */
  sizes: Record<string, PauseSize>;
  /** Over every measured checkpoint of every size. */
  deviceStateMs: Spread | undefined;
}

/** The spreads of a size's samples. */
export function pauseSize(requestedPages: number, samples: PauseSample[]): PauseSize {
  const keyed = (pick: (s: PauseSample) => Record<string, number>): Record<string, Spread> => {
    const keys = [...new Set(samples.flatMap((s) => Object.keys(pick(s))))];
    const out: Record<string, Spread> = {};
    for (const k of keys) {
      const sp = spread(samples.map((s) => pick(s)[k] ?? NaN));
      if (sp) out[k] = sp;
    }
    return out;
  };
  return {
    requestedPages,
    samples,
    pauseMs: spread(samples.map((s) => s.pauseMs)),
    pages: spread(samples.map((s) => s.pages)),
    breakdownMs: keyed((s) => s.breakdownMs),
    secondaryMs: keyed((s) => s.secondaryMs),
    deviceStateMs: spread(samples.map((s) => s.deviceStateMs ?? NaN)),
  };
}

export interface MigrationFigures {
  runs: MigrationFigure[];
  downtimeMs: Spread | undefined;
  totalMs: Spread | undefined;
}

export type EngineGuest = { manifest: string; arch: string; kernelRelease: string; redis: string } | { manifest: string; error: string };

/** What bench/engine-run.js prints, one JSON line on stdout. */
export interface EngineRun {
  engine: EngineId;
  guest: EngineGuest;
  /** What `colo status` said of the booted VM. */
  vm: { engine: string | null; accelerator: string | null; memoryMiB: number | null } | null;
  phases: {
    boot: Phase<BootFigures>;
    unprotected: Phase<UnprotectedFigures>;
    compare: Phase<ProtectedFigures>;
    remus: Phase<ProtectedFigures>;
    checkpointPause: Phase<PauseFigures>;
    migration: Phase<MigrationFigures>;
  };
}

export type PhaseName = keyof EngineRun["phases"];
export const PHASE_NAMES: readonly PhaseName[] = ["boot", "unprotected", "compare", "remus", "checkpointPause", "migration"];

/** A run where nothing was measured (the worker failed before it printed its figures). */
export function failedRun(engine: EngineId, error: string, guest: EngineGuest = { manifest: "?", error }): EngineRun {
  const failed = { ok: false as const, seconds: 0, error };
  return {
    engine,
    guest,
    vm: null,
    phases: { boot: failed, unprotected: failed, compare: failed, remus: failed, checkpointPause: failed, migration: failed },
  };
}

/** Minimal check of a worker's JSON line. */
export function isEngineRun(v: unknown, engine: EngineId): v is EngineRun {
  if (typeof v !== "object" || v === null) return false;
  const r = v as { engine?: unknown; phases?: unknown };
  if (r.engine !== engine || typeof r.phases !== "object" || r.phases === null) return false;
  const phases = r.phases as Record<string, unknown>;
  return PHASE_NAMES.every((p) => typeof phases[p] === "object" && phases[p] !== null && typeof (phases[p] as { ok?: unknown }).ok === "boolean");
}

/** Settings, not figures: no ratio is taken of them. */
const NOT_FIGURES = new Set(["n", "requests", "warmupRequests", "requestedPages", "bufferPages", "checkpointMaxIntervalMs", "seconds", "checkpoint"]);

/**
 * Every number of the run's successful phases, by path ("compare.redis.SET
 * c=16.opsPerSec", "checkpointPause.sizes.1000.pauseMs.median"); arrays
 * (the raw samples and runs) and settings left out.
 */
export function flatFigures(run: EngineRun): Record<string, number> {
  const out: Record<string, number> = {};
  const walk = (v: unknown, path: string): void => {
    if (typeof v === "number") {
      if (Number.isFinite(v)) out[path] = v;
      return;
    }
    if (typeof v !== "object" || v === null || Array.isArray(v)) return;
    for (const [k, child] of Object.entries(v)) if (!NOT_FIGURES.has(k)) walk(child, path ? `${path}.${k}` : k);
  };
  for (const name of PHASE_NAMES) {
    const p = run.phases[name];
    if (p.ok) walk(p.figures, name);
  }
  return out;
}

/** a / b for every figure both have (b not 0), 3 decimals. */
export function figureRatios(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(a)) {
    const base = b[k];
    if (base !== undefined && base !== 0) out[k] = round(v / base, 3);
  }
  return out;
}

export interface Target {
  target: string;
  /** null: not measured (a phase failed, or the engine was not run). */
  measured: number | null;
  unit: string;
  met: boolean;
  detail?: Record<string, number | null>;
}

const UNPROTECTED_KEYS = ["SET c=1", "GET c=1", "SET c=16", "GET c=16"];

/**
 * Issue 12's targets: qemu boots to Redis ready in ≤ 5 s; qemu's
 * unprotected Redis ≥ 3× emu's (the smallest of the SET/GET × 1/16 client
 * ratios counts); on each engine, device-state save + load ≤ 20 ms of the
 * checkpoint pause (the median over every measured checkpoint).
 */
export function engineTargets(runs: Partial<Record<EngineId, EngineRun>>): Record<string, Target> {
  const qemu = runs.qemu;
  const emu = runs.emu;
  const boot = qemu?.phases.boot.ok ? qemu.phases.boot.figures.bootToReadyMs : null;
  const table = (r: EngineRun | undefined) => (r?.phases.unprotected.ok ? r.phases.unprotected.figures.redis : undefined);
  const qt = table(qemu);
  const et = table(emu);
  const detail: Record<string, number | null> = {};
  for (const k of UNPROTECTED_KEYS) {
    const q = qt?.[k]?.opsPerSec;
    const e = et?.[k]?.opsPerSec;
    detail[k] = q !== undefined && e !== undefined && e > 0 ? round(q / e, 3) : null;
  }
  const ratios = Object.values(detail);
  const worst = ratios.length > 0 && ratios.every((r): r is number => r !== null) ? Math.min(...ratios) : null;
  const out: Record<string, Target> = {
    bootQemu: { target: "qemu: boot to Redis ready (colo create until it returns) <= 5000 ms", measured: boot, unit: "ms", met: boot !== null && boot <= 5000 },
    unprotectedRedisQemuVsEmu: {
      target: "qemu: unprotected Redis ops/s >= 3x emu's (smallest of SET/GET with 1 and 16 clients)",
      measured: worst,
      unit: "ratio",
      met: worst !== null && worst >= 3,
      detail,
    },
  };
  for (const id of ENGINE_IDS) {
    const r = runs[id];
    if (!r) continue;
    const p = r.phases.checkpointPause;
    const sp = p.ok ? p.figures.deviceStateMs : undefined;
    out[`deviceState_${id}`] = {
      target: `${id}: device-state save (primary) + load (secondary) <= 20 ms of the checkpoint pause (median over the measured checkpoints)`,
      measured: sp ? sp.median : null,
      unit: "ms",
      met: sp !== undefined && sp.median <= 20,
      detail: { max: sp ? sp.max : null, checkpoints: sp ? sp.n : null },
    };
  }
  return out;
}
