/**
 * Unprotected vs Remus vs COLO compare mode, same run, same guest (issues
 * 5, 6 and 7): Redis ops/s, p50/p99 with 1 and 16 clients; checkpoints per
 * minute and their reasons in compare mode. Then the disk-heavy case
 * (Redis AOF with appendfsync always on a replicated data disk):
 * unprotected vs compare mode, the disk channel's MB/s, and the pause of
 * an operator checkpoint taken right after a write burst (a write backlog).
 *
 * Goal (issue 5): compare mode >= 90% of unprotected ops/s for SET/GET with
 * 16 clients, and far above Remus mode.
 *
 *   npm run build && node dist/bench/colo.js [--requests N]
 *
 * Each protected session gets a warm-up run first (the secondary's
 * emulator compiles the guest's code anew after checkpoint 0). Writes
 * bench/results/colo-<timestamp>.json. Not a test. Needs root and the
 * guest image.
 */
import { copyFileSync } from "node:fs";
import { join } from "node:path";
import { labTopology } from "../src/lab/lab.js";
import { createDataDisk } from "../guest/mkdisk.js";
import { runIn } from "../test/tools/run.js";
import { writeGuestConfig } from "../test/tools/guest-fixture.js";
import { writeResult } from "./results.js";
import { positiveIntArg } from "./args.js";
import { BenchLab } from "./bench-lab.js";
import { redisBenchmark, type RedisBenchFigure } from "./redis-benchmark.js";

const LAB = labTopology("cbcol");
const [H1] = LAB.hosts;
const NAME = "bcol";

interface Status {
  pid: number;
  replication?: { checkpoints: number; lastPauseMs: number; p99PauseMs: number; checkpointReasons?: Record<string, number> };
  heldOutput?: Record<string, unknown>;
  proxy?: { disks?: { bytes: number; writes: number }[] };
}

interface Run {
  mode: "unprotected" | "remus" | "compare";
  intervalMs?: number;
  redis: RedisBenchFigure[];
  seconds: number;
  checkpoints?: number;
  checkpointsPerMinute?: number;
  reasons?: Record<string, number>;
  p99PauseMs?: number;
  diskChannelMBps?: number;
}

async function main(): Promise<void> {
  const requests = positiveIntArg("--requests", 5000);
  const pair = await BenchLab.open({ prefix: LAB.prefix, name: NAME });
  const { work } = pair;
  const status = (host: string) => pair.status<Status>(host);
  const bench = async (tests: string, n: number, clientsList: number[]) => {
    const out: RedisBenchFigure[] = [];
    for (const clients of clientsList) out.push(...(await redisBenchmark(LAB.namespaces.client, LAB.guestIp, { tests, requests: n, clients, timeoutMs: 900_000 })));
    return out;
  };
  const measured = async (mode: Run["mode"], tests: string, n: number, clientsList: number[], intervalMs?: number): Promise<Run> => {
    const before = mode === "unprotected" ? undefined : await status(H1);
    const t0 = Date.now();
    const redis = await bench(tests, n, clientsList);
    const seconds = (Date.now() - t0) / 1000;
    const run: Run = { mode, redis, seconds, ...(intervalMs ? { intervalMs } : {}) };
    if (before) {
      const after = await status(H1);
      const checkpoints = (after.replication?.checkpoints ?? 0) - (before.replication?.checkpoints ?? 0);
      run.checkpoints = checkpoints;
      run.checkpointsPerMinute = Math.round((checkpoints / seconds) * 60 * 10) / 10;
      run.p99PauseMs = after.replication?.p99PauseMs ?? 0;
      const reasons: Record<string, number> = {};
      for (const [k, v] of Object.entries(after.replication?.checkpointReasons ?? {})) reasons[k] = v - (before.replication?.checkpointReasons?.[k] ?? 0);
      run.reasons = reasons;
      const bytes = (s: Status) => (s.proxy?.disks ?? []).reduce((a, d) => a + d.bytes, 0);
      const diskBytes = bytes(after) - bytes(before);
      if (diskBytes > 0) run.diskChannelMBps = Math.round((diskBytes / 2 ** 20 / seconds) * 100) / 100;
    }
    return run;
  };
  try {
    // --- Part 1: no data disk; SET/GET; unprotected vs Remus (100 ms) vs compare ---
    const plain = writeGuestConfig({ dir: join(work, "plain"), name: NAME, ip: `${LAB.guestIp}/24`, mac: "00:16:3e:4c:00:90", bridge: LAB.hostBridge });
    await pair.must("create", ["create", plain.cfg]);
    const runs: Run[] = [];
    await bench("set,get", 2000, [16]); // warm-up
    runs.push(await measured("unprotected", "set,get", requests, [1, 16]));

    await pair.protect();
    await bench("set,get", 2000, [16]); // warm-up: the SVM's JIT
    runs.push(await measured("compare", "set,get", requests, [1, 16]));
    // Non-deterministic replies: every one differs between the VMs.
    const nondet = await runIn(LAB.namespaces.client, "redis-benchmark", ["-h", LAB.guestIp, "-n", "200", "-c", "1", "--csv", "TIME"], { timeoutMs: 300_000 });
    const afterTime = await status(H1);
    await pair.endSession();

    await pair.remus(100);
    // A Remus reply waits for the next checkpoint: fewer requests keep the run bounded.
    runs.push(await measured("remus", "set,get", Math.min(requests, 1000), [1, 16], 100));
    await pair.endSession();
    await pair.must("destroy", ["destroy", NAME]);

    // --- Part 2: AOF appendfsync always on a replicated data disk ---
    const pImg = join(work, "p.img");
    const sImg = join(work, "s.img");
    await createDataDisk(pImg, 64);
    copyFileSync(pImg, sImg);
    const common = { name: NAME, ip: `${LAB.guestIp}/24`, mac: "00:16:3e:4c:00:90", bridge: LAB.hostBridge, extra: "colo.appendfsync=always" };
    const pCfg = writeGuestConfig({ ...common, dir: join(work, "dp"), disk: pImg }).cfg;
    const sCfg = writeGuestConfig({ ...common, dir: join(work, "ds"), disk: sImg }).cfg;
    await pair.must("create (disk)", ["create", pCfg]);
    const diskRuns: Run[] = [];
    await bench("set", 1000, [16]);
    diskRuns.push(await measured("unprotected", "set", requests, [16]));
    await pair.listenSecondary();
    const t0 = Date.now();
    await pair.must("migrate --colo (disk)", ["migrate", "--colo", NAME, LAB.replIps[1], "--key-file", pair.key, "-C", sCfg, "--checkpoint-max-interval", "600000"]);
    const startMs = Date.now() - t0;
    await bench("set", 1000, [16]);
    diskRuns.push(await measured("compare", "set", requests, [16]));
    // A write burst, then an operator checkpoint: its pause with that backlog.
    await bench("set", 2000, [16]);
    const cp = JSON.parse((await pair.must("checkpoint", ["checkpoint", NAME])).stdout) as { pauseMs: number };
    await pair.endSession();

    const ratio = (mode: Run["mode"], test: string, clients: number, list: Run[]) => {
      const base = list.find((r) => r.mode === "unprotected")?.redis.find((f) => f.test === test && f.clients === clients)?.opsPerSec ?? 0;
      const v = list.find((r) => r.mode === mode)?.redis.find((f) => f.test === test && f.clients === clients)?.opsPerSec ?? 0;
      return base > 0 ? Math.round((v / base) * 1000) / 1000 : 0;
    };
    writeResult("colo", {
      goals: { compareVsUnprotectedAt16Clients: 0.9 },
      figures: {
        requestsPerTest: requests,
        runs,
        ratios: {
          compareVsUnprotected: { SET16: ratio("compare", "SET", 16, runs), GET16: ratio("compare", "GET", 16, runs), SET1: ratio("compare", "SET", 1, runs), GET1: ratio("compare", "GET", 1, runs) },
          remusVsUnprotected: { SET16: ratio("remus", "SET", 16, runs), GET16: ratio("remus", "GET", 16, runs) },
        },
        nonDeterministic: { command: "TIME", requests: 200, ok: nondet.code === 0, reasonsAfter: afterTime.replication?.checkpointReasons },
        disk: {
          appendfsync: "always",
          runs: diskRuns,
          compareVsUnprotectedSET16: ratio("compare", "SET", 16, diskRuns),
          replicationStartMs: startMs,
          checkpointPauseWithBacklogMs: cp.pauseMs,
        },
      },
    });
  } finally {
    await pair.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
