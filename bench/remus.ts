/**
 * Remus mode vs unprotected, same run, same guest (issue: checkpointed
 * replication): Redis ops/s and p50/p99 with checkpoints every 25, 100 and
 * 1000 ms; checkpoint pause and pages per checkpoint; failover time from
 * SIGKILL of the primary to the client's first reply, detection included.
 * Goals: checkpoint pause <= 20 ms for 1,000 dirty pages on emu; failover <= 1 s.
 *
 *   npm run build && node dist/bench/remus.js [--requests N]
 *
 * Writes bench/results/remus-<timestamp>.json. Not a test. Needs root and the guest image.
 */
import { labTopology } from "../src/lab/lab.js";
import { runIn } from "../test/tools/run.js";
import { writeGuestConfig } from "../test/tools/guest-fixture.js";
import { writeResult } from "./results.js";
import { positiveIntArg } from "./args.js";
import { BenchLab } from "./bench-lab.js";
import { remusRequestsPerTest } from "./lab-session.js";
import { redisBenchmark, type RedisBenchFigure } from "./redis-benchmark.js";

const LAB = labTopology("cbrem");
const [H1, H2] = LAB.hosts;

interface Replication {
  checkpoints: number;
  lastPauseMs: number;
  p99PauseMs: number;
  pagesPerCheckpoint: number;
  mode: string;
}

async function main(): Promise<void> {
  const requests = positiveIntArg("--requests", 1000);
  const pair = await BenchLab.open({ prefix: LAB.prefix, name: "brem" });
  const status = (host: string) => pair.status<{ pid: number; replication?: Replication }>(host);
  // A Remus reply waits for the next checkpoint: one client does about 1000/interval ops/s.
  // Requests per test are scaled so a run stays bounded (about 20 s per test at most).
  const requestsFor = (intervalMs: number | undefined, clients: number) => (intervalMs === undefined ? requests : remusRequestsPerTest(requests, intervalMs, clients));
  const bench = async (intervalMs?: number) => {
    const out: RedisBenchFigure[] = [];
    for (const clients of [1, 16]) {
      out.push(...(await redisBenchmark(LAB.namespaces.client, LAB.guestIp, { tests: "set,get", requests: requestsFor(intervalMs, clients), clients })));
    }
    return out;
  };
  try {
    const f = writeGuestConfig({ dir: pair.work, name: "brem", ip: `${LAB.guestIp}/24`, mac: "00:16:3e:4c:00:70", bridge: LAB.hostBridge });
    await pair.must("create", ["create", f.cfg]);

    const runs: { mode: string; intervalMs?: number; redis: RedisBenchFigure[]; replication?: Replication }[] = [];
    runs.push({ mode: "unprotected", redis: await bench() });
    for (const intervalMs of [25, 100, 1000]) {
      await pair.remus(intervalMs);
      const redis = await bench(intervalMs);
      const s = await status(H1);
      runs.push({ mode: "remus", intervalMs, redis, ...(s.replication ? { replication: s.replication } : {}) });
      await pair.must("failover", ["failover", "brem"]); // orderly end: the secondary discards its copy
      await new Promise((r) => setTimeout(r, 1000)); // let the secondary daemon exit before the next session
    }

    // Failover time: SIGKILL of the primary to the first reply from the survivor.
    await pair.remus(100);
    const primary = await status(H1);
    const t0 = Date.now();
    process.kill(primary.pid, "SIGKILL");
    let failoverMs = -1;
    while (Date.now() - t0 < 30_000) {
      // redis-cli 7.0 has no connect timeout option: bound each attempt from outside.
      const r = await runIn(LAB.namespaces.client, "redis-cli", ["-h", LAB.guestIp, "PING"], { timeoutMs: 300 });
      if (r.stdout.trim() === "PONG") {
        failoverMs = Date.now() - t0;
        break;
      }
    }
    await pair.colo(H2, ["destroy", "brem"]);

    writeResult("remus", {
      goals: { checkpointPauseMsFor1000Pages: 20, failoverMs: 1000 },
      figures: { requestsPerTest: requests, runs, failoverMs },
    });
  } finally {
    await pair.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
