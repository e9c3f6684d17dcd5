/**
 * Compare mode's cost against the number of open connections (issue 15),
 * one run, one guest: unprotected, then protected in COLO compare mode.
 *
 *   npm run build && node dist/bench/connections.js [--clients 1,10,100,1000] [--requests 4000]
 *
 * Per mode and per count c of `--clients`: redis-benchmark GET and SET
 * with c clients (c connections held open for the test, keep-alive),
 * max(--requests, 5 c) requests each: ops/s, p50, p99; the CPU the
 * primary's daemon and engine used per request (utime + stime, /proc),
 * and each process's share (the secondary's daemon and engine too);
 * in compare mode the comparator's flows, holdMs and divergences after it.
 * A warm-up (2000 requests, 16 clients) before each mode. Ratios compare /
 * unprotected per c. Nothing is pinned (bench/placement.ts measures
 * placement). A count whose test fails (e.g. the guest refuses that many
 * connections) is recorded with its error and the run goes on. Writes
 * bench/results/connections-<timestamp>.json. Not a test: no figure fails
 * it. Needs root and the guest image; `COLO_TEST_ENGINE=qemu` for qemu.
 */
import { join } from "node:path";
import { labTopology } from "../src/lab/lab.js";
import { writeGuestConfig } from "../test/tools/guest-fixture.js";
import { positiveIntArg, positiveIntListArg } from "./args.js";
import { BenchLab } from "./bench-lab.js";
import { CLOCK_TICKS_PER_SEC, cpuTicks } from "./cpu.js";
import { redisBenchmark, type RedisBenchFigure } from "./redis-benchmark.js";
import { writeResult } from "./results.js";

const LAB = labTopology("cbcon");
const [H1, H2] = LAB.hosts;
const NAME = "bcon";

interface Status {
  pid: number;
  enginePid?: number;
  replication?: { checkpoints: number; checkpointReasons?: Record<string, number> };
  heldOutput?: { flows?: number; flowsEvicted?: number; holdMs?: unknown; responseMs?: unknown; divergences?: Record<string, number> };
  proxy?: { responseMs?: unknown };
}

interface Point {
  mode: "unprotected" | "compare";
  clients: number;
  requests: number;
  redis?: RedisBenchFigure[];
  /** The primary's daemon + engine CPU per request, µs (both tests together). */
  cpuUsPerRequest?: number;
  /** The same per process: each host's daemon and engine (the secondary's in compare mode). */
  cpuUsPerRequestOf?: Record<string, number>;
  checkpoints?: number;
  comparator?: Status["heldOutput"];
  /** The SVM's response times (the PVM's are the comparator's `responseMs`). */
  svmResponseMs?: unknown;
  error?: string;
}

async function main(): Promise<void> {
  const counts = positiveIntListArg("--clients", [1, 10, 100, 1000]);
  const requests = positiveIntArg("--requests", 4000);
  const pair = await BenchLab.open({ prefix: LAB.prefix, name: NAME });
  const status = (host = H1) => pair.status<Status>(host);
  const cpuOf = (s: Status) => [s.pid, s.enginePid].filter((p): p is number => p !== undefined).reduce((a, p) => a + cpuTicks(p), 0);
  const measure = async (mode: Point["mode"]): Promise<Point[]> => {
    await redisBenchmark(LAB.namespaces.client, LAB.guestIp, { tests: "set,get", requests: 2000, clients: 16, timeoutMs: 900_000 }); // warm-up
    const points: Point[] = [];
    for (const clients of counts) {
      const n = Math.max(requests, 5 * clients);
      const point: Point = { mode, clients, requests: n };
      try {
        const before = await status();
        const cpu0 = cpuOf(before);
        const processes: Record<string, number | undefined> = { primaryDaemon: before.pid, primaryEngine: before.enginePid };
        if (mode === "compare") {
          const s2 = await status(H2);
          processes.secondaryDaemon = s2.pid;
          processes.secondaryEngine = s2.enginePid;
        }
        // A qemu secondary's engine is another process after each checkpoint (a standby takes over): its share is left out then.
        const ticksOf = (pid: number): number | undefined => {
          try {
            return cpuTicks(pid);
          } catch {
            return undefined;
          }
        };
        const ticks0 = Object.fromEntries(Object.entries(processes).map(([k, pid]) => [k, pid === undefined ? undefined : ticksOf(pid)]));
        point.redis = await redisBenchmark(LAB.namespaces.client, LAB.guestIp, { tests: "set,get", requests: n, clients, timeoutMs: 900_000 });
        const after = await status();
        const perRequest = (ticks: number) => Math.round(((ticks / CLOCK_TICKS_PER_SEC) * 1e6) / (2 * n));
        point.cpuUsPerRequest = perRequest(cpuOf(after) - cpu0);
        point.cpuUsPerRequestOf = {};
        for (const [k, pid] of Object.entries(processes)) {
          const t0 = ticks0[k];
          const t1 = pid === undefined ? undefined : ticksOf(pid);
          if (t0 !== undefined && t1 !== undefined) point.cpuUsPerRequestOf[k] = perRequest(t1 - t0);
        }
        if (mode === "compare") {
          point.checkpoints = (after.replication?.checkpoints ?? 0) - (before.replication?.checkpoints ?? 0);
          const h = after.heldOutput;
          point.svmResponseMs = (await status(H2)).proxy?.responseMs;
          point.comparator = { ...(h?.flows !== undefined ? { flows: h.flows } : {}), ...(h?.flowsEvicted !== undefined ? { flowsEvicted: h.flowsEvicted } : {}), holdMs: h?.holdMs, responseMs: h?.responseMs, ...(h?.divergences ? { divergences: h.divergences } : {}) };
        }
      } catch (err) {
        point.error = err instanceof Error ? err.message : String(err);
      }
      process.stderr.write(
        `connections: ${mode} c=${clients}: ${point.error ?? (point.redis ?? []).map((f) => `${f.test} ${Math.round(f.opsPerSec)} ops/s p50 ${f.p50Ms} p99 ${f.p99Ms}`).join("; ")}${point.cpuUsPerRequest !== undefined ? `; ${point.cpuUsPerRequest} µs CPU/request ${JSON.stringify(point.cpuUsPerRequestOf)}` : ""}\n`,
      );
      points.push(point);
    }
    return points;
  };
  try {
    const cfg = writeGuestConfig({ dir: join(pair.work, "guest"), name: NAME, ip: `${LAB.guestIp}/24`, mac: "00:16:3e:4c:00:94", bridge: LAB.hostBridge });
    await pair.must("create", ["create", cfg.cfg]);
    const points = await measure("unprotected");
    await pair.protect();
    points.push(...(await measure("compare")));
    await pair.endSession();
    const ratios: Record<string, unknown> = {};
    for (const c of counts) {
      const of = (mode: Point["mode"]) => points.find((p) => p.mode === mode && p.clients === c);
      const u = of("unprotected");
      const p = of("compare");
      for (const test of ["SET", "GET"]) {
        const uf = u?.redis?.find((f) => f.test === test);
        const pf = p?.redis?.find((f) => f.test === test);
        ratios[`${test} c=${c}`] = uf && pf ? { opsRatio: Math.round((pf.opsPerSec / uf.opsPerSec) * 100) / 100, p99Ratio: Math.round((pf.p99Ms / uf.p99Ms) * 100) / 100 } : null;
      }
      ratios[`cpuUsPerRequest c=${c}`] = { unprotected: u?.cpuUsPerRequest ?? null, compare: p?.cpuUsPerRequest ?? null };
    }
    writeResult("connections", { requests, clients: counts, points, figures: ratios });
  } finally {
    await pair.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`connections: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
