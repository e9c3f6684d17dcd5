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
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { labDown, labTopology, labUp } from "../src/lab/lab.js";
import { generateKeyFile } from "../src/channel/key.js";
import { COLO_BIN, runIn } from "../test/tools/run.js";
import { writeGuestConfig } from "../test/tools/guest-fixture.js";
import { writeResult } from "./results.js";
import { positiveIntArg } from "./args.js";
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
  const work = mkdtempSync(join(tmpdir(), "colo-brem-"));
  const env = { ...process.env, COLO_RUN_DIR: join(work, "run") };
  const key = join(work, "key");
  generateKeyFile(key);
  await labUp({ prefix: LAB.prefix });
  const colo = (host: string, args: string[]) => runIn(host, COLO_BIN, args, { env, timeoutMs: 600_000 });
  const status = async (host: string) => JSON.parse((await colo(host, ["status", "brem"])).stdout) as { pid: number; replication?: Replication };
  const protect = async (intervalMs: number) => {
    const recv = spawn("ip", ["netns", "exec", H2, COLO_BIN, "migrate-receive", "--colo", "--listen", LAB.replIps[1], "--key-file", key, "--detach"], { env, stdio: "ignore" });
    await new Promise<void>((resolve, reject) => recv.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`migrate-receive --colo exited ${code}`)))));
    const r = await colo(H1, ["remus", "brem", LAB.replIps[1], "--key-file", key, "--interval", String(intervalMs)]);
    if (r.code !== 0) throw new Error(`remus: ${r.stderr}`);
  };
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
    const f = writeGuestConfig({ dir: work, name: "brem", ip: `${LAB.guestIp}/24`, mac: "00:16:3e:4c:00:70", bridge: LAB.hostBridge });
    const created = await colo(H1, ["create", f.cfg]);
    if (created.code !== 0) throw new Error(`create: ${created.stderr}`);

    const runs: { mode: string; intervalMs?: number; redis: RedisBenchFigure[]; replication?: Replication }[] = [];
    runs.push({ mode: "unprotected", redis: await bench() });
    for (const intervalMs of [25, 100, 1000]) {
      await protect(intervalMs);
      const redis = await bench(intervalMs);
      const s = await status(H1);
      runs.push({ mode: "remus", intervalMs, redis, ...(s.replication ? { replication: s.replication } : {}) });
      const stop = await colo(H1, ["failover", "brem"]); // orderly end: the secondary discards its copy
      if (stop.code !== 0) throw new Error(`failover: ${stop.stderr}`);
      await new Promise((r) => setTimeout(r, 1000)); // let the secondary daemon exit before the next session
    }

    // Failover time: SIGKILL of the primary to the first reply from the survivor.
    await protect(100);
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
    await colo(H2, ["destroy", "brem"]);

    writeResult("remus", {
      goals: { checkpointPauseMsFor1000Pages: 20, failoverMs: 1000 },
      figures: { requestsPerTest: requests, runs, failoverMs },
    });
  } finally {
    for (const h of LAB.hosts) await colo(h, ["destroy", "brem"]).catch(() => undefined);
    await labDown({ prefix: LAB.prefix });
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
