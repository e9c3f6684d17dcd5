/**
 * Regenerates the side-by-side tables of bench/README.md from the JSON in
 * bench/results/ (issue 7 item 5): the newest `colo-*.json` (unprotected vs
 * COLO compare vs Remus, and the disk-heavy case), every `faults-*.json`
 * (totals over all recorded suites, and every failed run) and every
 * `memtest-*.json` (a failed one marked FAILED, with why).
 *
 *   npm run build && node dist/bench/report.js [--write]
 *
 * Prints the markdown; with --write, replaces the part of bench/README.md
 * between the `<!-- report:start -->` and `<!-- report:end -->` markers.
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT } from "../test/tools/run.js";
import type { SuiteSummary } from "../test/faults/fault-suite.js";
import { memtestProblems, type MemtestResult as MemtestFigures } from "../test/faults/memtest.js";
import { runFailures } from "../test/faults/run-checks.js";

const RESULTS = join(REPO_ROOT, "bench/results");
const README = join(REPO_ROOT, "bench/README.md");
const START = "<!-- report:start -->";
const END = "<!-- report:end -->";

interface Figure {
  test: string;
  clients: number;
  opsPerSec: number;
  p50Ms: number;
  p99Ms: number;
}
interface Run {
  mode: string;
  intervalMs?: number;
  redis: Figure[];
  checkpointsPerMinute?: number;
  reasons?: Record<string, number>;
  p99PauseMs?: number;
  diskChannelMBps?: number;
}
interface ColoResult {
  date: string;
  figures: {
    requestsPerTest: number;
    runs: Run[];
    ratios: { compareVsUnprotected: Record<string, number>; remusVsUnprotected: Record<string, number> };
    nonDeterministic: { command: string; requests: number; ok: boolean; reasonsAfter?: Record<string, number> };
    disk: { runs: Run[]; compareVsUnprotectedSET16: number; replicationStartMs: number; checkpointPauseWithBacklogMs: number };
  };
}
interface FaultsResult {
  date: string;
  /** Absent in results written before the qemu engine: those ran on emu. */
  engine?: string;
  figures: SuiteSummary;
}
interface MemtestResult {
  date: string;
  figures: MemtestFigures;
}

function load<T>(prefix: string): { file: string; data: T }[] {
  return readdirSync(RESULTS)
    .filter((f) => f.startsWith(prefix) && f.endsWith(".json"))
    .sort()
    .map((file) => ({ file, data: JSON.parse(readFileSync(join(RESULTS, file), "utf8")) as T }));
}

const fmt = (n: number | undefined) => (n === undefined ? "—" : n >= 100 ? String(Math.round(n)) : n.toFixed(1));

function fig(run: Run | undefined, test: string, clients: number): Figure | undefined {
  return run?.redis.find((f) => f.test === test && f.clients === clients);
}

function coloTables(r: { file: string; data: ColoResult }): string[] {
  const f = r.data.figures;
  const out = [
    `### Unprotected vs COLO compare vs Remus (\`${r.file}\`, ${f.requestsPerTest} requests per test)`,
    "",
    "| mode | SET c=1 (p50) | GET c=1 (p50) | SET c=16 (p50 / p99) | GET c=16 (p50 / p99) | checkpoints/min (reasons) | checkpoint pause p99 |",
    "|---|---|---|---|---|---|---|",
  ];
  for (const run of f.runs) {
    const one = (t: string) => {
      const x = fig(run, t, 1);
      return x ? `${fmt(x.opsPerSec)} (${x.p50Ms} ms)` : "—";
    };
    const many = (t: string) => {
      const x = fig(run, t, 16);
      return x ? `${fmt(x.opsPerSec)} (${x.p50Ms} / ${x.p99Ms} ms)` : "—";
    };
    const reasons = Object.entries(run.reasons ?? {})
      .filter(([, v]) => v > 0)
      .map(([k, v]) => `${k} ${v}`)
      .join(", ");
    const name = run.mode === "remus" ? `Remus ${run.intervalMs} ms` : run.mode === "compare" ? "COLO compare" : run.mode;
    out.push(`| ${name} | ${one("SET")} | ${one("GET")} | ${many("SET")} | ${many("GET")} | ${run.checkpointsPerMinute === undefined ? "—" : `${run.checkpointsPerMinute}${reasons ? ` (${reasons})` : ""}`} | ${run.p99PauseMs === undefined ? "—" : `${run.p99PauseMs} ms`} |`);
  }
  const c = f.ratios.compareVsUnprotected;
  const m = f.ratios.remusVsUnprotected;
  out.push(
    "",
    `Ratios to unprotected: COLO compare SET c=16 **${c.SET16}**, GET c=16 **${c.GET16}** (goal 0.90), SET c=1 ${c.SET1}, GET c=1 ${c.GET1}; Remus SET c=16 ${m.SET16}, GET c=16 ${m.GET16}.`,
    `Non-deterministic replies: ${f.nonDeterministic.requests} \`${f.nonDeterministic.command}\` requests, client ${f.nonDeterministic.ok ? "ok" : "FAILED"}; checkpoint reasons after: ${Object.entries(f.nonDeterministic.reasonsAfter ?? {}).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v}`).join(", ")}.`,
    "",
    "Disk-heavy: Redis AOF `appendfsync always`, 16 clients, SET:",
    "",
    "| mode | SET ops/s (p99) | disk channel | checkpoints/min |",
    "|---|---|---|---|",
  );
  for (const run of f.disk.runs) {
    const x = fig(run, "SET", 16);
    out.push(`| ${run.mode === "compare" ? "COLO compare + disk replication" : run.mode} | ${x ? `${fmt(x.opsPerSec)} (${x.p99Ms} ms)` : "—"} | ${run.diskChannelMBps === undefined ? "—" : `${run.diskChannelMBps} MB/s`} | ${run.checkpointsPerMinute ?? "—"} |`);
  }
  out.push("", `Replicated / unprotected: **${f.disk.compareVsUnprotectedSET16}**; replication start (disk hashes, differing chunks, memory): ${f.disk.replicationStartMs} ms; checkpoint pause right after a 2000-write burst: ${f.disk.checkpointPauseWithBacklogMs} ms.`);
  return out;
}

function faultsTable(all: { file: string; data: FaultsResult }[]): string[] {
  const kinds: Record<string, number> = {};
  const gaps: number[] = [];
  const byKind: Record<string, number[]> = {};
  let runs = 0;
  let acked = 0;
  let lost = 0;
  let incr = 0;
  let resets = 0;
  let split = 0;
  const failed: string[] = [];
  for (const { file, data } of all) {
    const f = data.figures;
    runs += f.runs;
    acked += f.acknowledgedWrites;
    lost += f.lostWrites;
    incr += f.incrViolations;
    resets += f.connectionResets;
    split += f.splitBrains;
    // Each run's own checks (older files lack the before/after-fault counts: those two are not judged there).
    for (const d of f.details) {
      const why = runFailures(d);
      if (why.length > 0) failed.push(`- \`${file}\` run ${d.run} (${d.fault}): ${why.join("; ")}`);
    }
    for (const [k, v] of Object.entries(f.faultsByKind)) kinds[k] = (kinds[k] ?? 0) + v;
    for (const d of f.details) if (d.failoverMs > 0 && ["kill-primary", "kill-primary-mid-checkpoint", "kill-primary-engine", "stall-primary", "link-down", "link-flap"].includes(d.fault)) gaps.push(d.failoverMs);
    for (const d of f.details) if (d.failoverMs > 0) (byKind[`${d.fault} | ${data.engine ?? "emu"}`] ??= []).push(d.failoverMs);
  }
  gaps.sort((a, b) => a - b);
  const pct = (p: number) => gaps[Math.min(gaps.length - 1, Math.floor(gaps.length * p))] ?? 0;
  return [
    `### Fault injection (${all.length} recorded suites: ${all.map((a) => `\`${a.file}\``).join(", ")})`,
    "",
    "| runs | faults by kind | acknowledged writes | lost | INCR violations | connection resets | split brains | failed runs |",
    "|---|---|---|---|---|---|---|---|",
    `| ${runs} | ${Object.entries(kinds).map(([k, v]) => `${k} ${v}`).join(", ")} | ${acked} | **${lost}** | ${incr} | ${resets} | **${split}** | ${failed.length > 0 ? `**${failed.length}**` : "0"} |`,
    "",
    ...(failed.length > 0 ? ["Failed runs:", "", ...failed, ""] : []),
    gaps.length > 0
      ? `Failover as the client saw it (longest gap between acknowledgements, detection included) for primary loss, primary stalls and link cuts: min ${gaps[0]} ms, median ${pct(0.5)} ms, max ${gaps[gaps.length - 1]} ms (${gaps.length} runs).`
      : "No primary-loss run recorded yet.",
    "",
    "Each suite on its own (a suite passes only if every run of it passed):",
    "",
    "| suite | engine | seed | runs | acknowledged writes | lost | connection resets | split brains | failed runs |",
    "|---|---|---|---|---|---|---|---|---|",
    ...all.map(({ file, data }) => {
      const f = data.figures;
      const bad = f.details.filter((d) => runFailures(d).length > 0).length;
      const partial = f.interrupted === true ? ` (interrupted: ${f.runs} of ${f.requestedRuns ?? "?"})` : "";
      return `| \`${file}\`${partial} | ${data.engine ?? "emu"} | ${f.seed ?? "—"} | ${f.runs} | ${f.acknowledgedWrites} | ${f.lostWrites} | ${f.connectionResets} | ${f.splitBrains} | ${bad > 0 ? `**${bad}**` : "0"} |`;
    }),
    "",
    "The client's longest gap by fault kind (all recorded runs):",
    "",
    "| fault | engine | runs | min | median | p99 | max |",
    "|---|---|---|---|---|---|---|",
    ...Object.entries(byKind)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => {
        const g = [...v].sort((a, b) => a - b);
        const at = (p: number) => g[Math.min(g.length - 1, Math.floor(g.length * p))] ?? 0;
        return `| ${k} | ${g.length} | ${g[0] ?? 0} ms | ${at(0.5)} ms | ${at(0.99)} ms | ${g[g.length - 1] ?? 0} ms |`;
      }),
  ];
}

/** Every recorded memtest run, oldest first: a failed one is shown as such, with why. */
function memtestTable(all: { file: string; data: MemtestResult }[]): string[] {
  if (all.length === 0) return ["### Memory integrity", "", "No memtest run recorded."];
  const failed = all.filter((r) => !r.data.figures.ok).length;
  const out = [
    `### Memory integrity (${all.length} recorded runs, ${failed} failed)`,
    "",
    "| run | result | memtester | checkpoints (max interval) | pause p99 | passes: primary / survivor after takeover | FAIL lines |",
    "|---|---|---|---|---|---|---|",
  ];
  for (const { file, data } of all) {
    const f = data.figures;
    const why = memtestProblems(f);
    // `ok` as recorded decides; the reasons are recomputed from the figures (older files have none of their own).
    const result = f.ok ? "passed" : `**FAILED**${why.length > 0 ? `: ${why.join("; ")}` : ""}`;
    out.push(`| \`${file}\` | ${result} | ${f.memtestSize} | ${f.checkpoints} (${f.checkpointIntervalMs} ms) | ${f.p99PauseMs} ms | ${f.primaryPasses} / ${f.survivorPassesAfterTakeover} | ${f.failures.length} |`);
  }
  return out;
}

function main(): void {
  const colo = load<ColoResult>("colo-");
  const newest = colo[colo.length - 1];
  const faults = load<FaultsResult>("faults-");
  const memtests = load<MemtestResult>("memtest-");
  const lines = [
    START,
    "<!-- generated by bench/report.ts from bench/results/*.json; do not edit by hand -->",
    "",
    ...(newest ? coloTables(newest) : ["No colo bench result recorded."]),
    "",
    ...faultsTable(faults),
    "",
    ...memtestTable(memtests),
    END,
  ];
  const md = lines.join("\n");
  process.stdout.write(md + "\n");
  if (process.argv.includes("--write")) {
    const readme = readFileSync(README, "utf8");
    const a = readme.indexOf(START);
    const b = readme.indexOf(END);
    const next = a >= 0 && b > a ? readme.slice(0, a) + md + readme.slice(b + END.length) : `${readme.trimEnd()}\n\n## Side by side (generated)\n\n${md}\n`;
    writeFileSync(README, next);
    process.stdout.write(`written ${README}\n`);
  }
}

main();
