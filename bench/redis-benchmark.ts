import { run, runIn } from "../test/tools/run.js";

export interface RedisBenchFigure {
  test: string;
  clients: number;
  requests: number;
  opsPerSec: number;
  avgMs: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** Parses `redis-benchmark --csv` output (redis-tools 7.0: one header line, one line per test). */
export function parseRedisBenchmarkCsv(csv: string, clients: number, requests: number): RedisBenchFigure[] {
  const lines = csv.trim().split(/\r?\n/).filter((l) => l.startsWith('"'));
  const header = lines.shift();
  if (!header) throw new Error(`redis-benchmark printed no CSV: ${JSON.stringify(csv.slice(0, 200))}`);
  const cols = header.split(",").map((c) => c.replace(/"/g, ""));
  const idx = (name: string) => {
    const i = cols.indexOf(name);
    if (i < 0) throw new Error(`redis-benchmark CSV has no column ${name}: ${header}`);
    return i;
  };
  return lines.map((line) => {
    const cells = line.split(",").map((c) => c.replace(/"/g, ""));
    const num = (name: string) => Number(cells[idx(name)]);
    return {
      test: cells[idx("test")] ?? "?",
      clients,
      requests,
      opsPerSec: num("rps"),
      avgMs: num("avg_latency_ms"),
      p50Ms: num("p50_latency_ms"),
      p99Ms: num("p99_latency_ms"),
      maxMs: num("max_latency_ms"),
    };
  });
}

/** Runs redis-benchmark from a namespace against `host` (bounded: n requests, timeout), on the CPUs `cpus` (taskset's list) when given. */
export async function redisBenchmark(
  netns: string,
  host: string,
  opts: { tests: string; requests: number; clients: number; timeoutMs?: number; cpus?: string },
): Promise<RedisBenchFigure[]> {
  const args = ["-h", host, "-t", opts.tests, "-n", String(opts.requests), "-c", String(opts.clients), "--csv"];
  const timeoutMs = opts.timeoutMs ?? 300_000;
  const r = opts.cpus === undefined
    ? await runIn(netns, "redis-benchmark", args, { timeoutMs })
    : await run("taskset", ["-c", opts.cpus, "ip", "netns", "exec", netns, "redis-benchmark", ...args], { timeoutMs });
  if (r.code !== 0) throw new Error(`redis-benchmark failed (${r.code ?? r.signal}): ${r.stderr.trim()}`);
  return parseRedisBenchmarkCsv(r.stdout, opts.clients, opts.requests);
}
