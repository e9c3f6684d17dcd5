/**
 * Compare mode against unprotected, measured fairly (issue 15, "Measure
 * fairly first"): the same guest, the same run, unpinned and pinned.
 *
 *   npm run build && node dist/bench/placement.js [--requests 4000]
 *
 * A pair of one 2-core machine runs two guests where unprotected runs one:
 * without pinning the ratio mostly measures CPU contention. So each figure
 * is taken twice, in one run:
 *
 * - unpinned: every process where the kernel puts it;
 * - pinned: the primary's processes (its daemon and, on qemu, QEMU, all
 *   threads: `taskset -a -p`) on CPU 0, the secondary's on CPU 1; the
 *   unprotected baseline's VM on CPU 0 alone. The client (redis-benchmark)
 *   runs on CPU 1 in both, beside the secondary when there is one: the
 *   primary's core, where the guest that answers runs, stays the VM's.
 *
 * Per placement and mode: a warm-up (2000 requests, 16 clients; the first
 * run after a boot or a protection is 2-4x slower, the JIT), then SET and
 * GET with 1 and 16 clients (ops/s, p50, p99), and the ratios compare /
 * unprotected, and (compare) how long the last replies released by compare
 * waited for the SVM's (the comparator's `holdMs`: the SVM's lag, what compare
 * mode adds to a reply), and the PVM's and SVM's response times
 * (`responseMs`) that split it: the profile of a protected request. Writes bench/results/placement-<timestamp>.json. Not a test:
 * no figure fails it. Needs root and the guest image.
 */
import { join } from "node:path";
import { labTopology } from "../src/lab/lab.js";
import { writeGuestConfig } from "../test/tools/guest-fixture.js";
import { positiveIntArg } from "./args.js";
import { ALL_CPUS, BenchLab } from "./bench-lab.js";
import { redisBenchmark, type RedisBenchFigure } from "./redis-benchmark.js";
import { writeResult } from "./results.js";

const LAB = labTopology("cbpla");
const [H1, H2] = LAB.hosts;
const NAME = "bpla";

interface Measured {
  placement: "unpinned" | "pinned";
  mode: "unprotected" | "compare";
  redis: RedisBenchFigure[];
  checkpoints?: number;
  reasons?: Record<string, number>;
  /** The comparator's hold time of the last 1024 replies released by compare: how long each waited for the SVM's. */
  holdMs?: Summary;
  /** Where a protected reply's time goes (medians of the last 1024 of each), see `profile()`. */
  profile?: ReturnType<typeof profile>;
}

interface Summary {
  samples: number;
  p50: number;
  p99: number;
  max: number;
}

/**
 * The PVM's and the SVM's response times (status `responseMs`: request in
 * at the guest's NIC to its reply out) and the comparator's hold (a PVM
 * reply waiting for the SVM's): hold = mirror + SVM + back channel − PVM,
 * so the mirror and back channel together come to hold + PVM − SVM (p50s;
 * an estimate: medians of different samples).
 */
function profile(hold: Summary | undefined, pvm: Summary | undefined, svm: Summary | undefined) {
  if (!hold || !pvm || !svm) return undefined;
  return {
    pvmResponseP50Ms: pvm.p50,
    svmResponseP50Ms: svm.p50,
    holdP50Ms: hold.p50,
    mirrorAndBackChannelP50Ms: Math.round((hold.p50 + pvm.p50 - svm.p50) * 1000) / 1000,
    pvmResponseP99Ms: pvm.p99,
    svmResponseP99Ms: svm.p99,
    holdP99Ms: hold.p99,
  };
}

interface Status {
  pid: number;
  enginePid?: number;
  replication?: { checkpoints: number; checkpointReasons?: Record<string, number> };
  heldOutput?: { holdMs?: Summary; responseMs?: Summary };
  proxy?: { responseMs?: Summary };
}

async function main(): Promise<void> {
  const requests = positiveIntArg("--requests", 4000);
  const pair = await BenchLab.open({ prefix: LAB.prefix, name: NAME });
  const status = (host: string) => pair.status<Status>(host);
  const pin = (host: string, cpus: string) => pair.pin(host, cpus);
  const bench = (tests: string, n: number, clients: number, cpus: string): Promise<RedisBenchFigure[]> =>
    redisBenchmark(LAB.namespaces.client, LAB.guestIp, { tests, requests: n, clients, timeoutMs: 900_000, cpus });
  const measure = async (placement: Measured["placement"], mode: Measured["mode"]): Promise<Measured> => {
    const clientCpus = placement === "pinned" ? "1" : ALL_CPUS;
    await bench("set,get", 2000, 16, clientCpus); // warm-up
    const before = mode === "compare" ? await status(H1) : undefined;
    const redis = [...(await bench("set,get", requests, 1, clientCpus)), ...(await bench("set,get", requests, 16, clientCpus))];
    const m: Measured = { placement, mode, redis };
    if (before) {
      const after = await status(H1);
      m.checkpoints = (after.replication?.checkpoints ?? 0) - (before.replication?.checkpoints ?? 0);
      const reasons: Record<string, number> = {};
      for (const [k, v] of Object.entries(after.replication?.checkpointReasons ?? {})) if (v - (before.replication?.checkpointReasons?.[k] ?? 0) > 0) reasons[k] = v - (before.replication?.checkpointReasons?.[k] ?? 0);
      m.reasons = reasons;
      m.holdMs = after.heldOutput?.holdMs;
      m.profile = profile(after.heldOutput?.holdMs, after.heldOutput?.responseMs, (await status(H2)).proxy?.responseMs);
    }
    process.stderr.write(
      `placement: ${placement} ${mode}: ${m.redis.map((f) => `${f.test} c=${f.clients} ${Math.round(f.opsPerSec)} ops/s p50 ${f.p50Ms} p99 ${f.p99Ms}`).join("; ")}${m.holdMs ? `; held ${JSON.stringify(m.holdMs)}` : ""}${m.profile ? `; profile ${JSON.stringify(m.profile)}` : ""}\n`,
    );
    return m;
  };
  try {
    const plain = writeGuestConfig({ dir: join(pair.work, "plain"), name: NAME, ip: `${LAB.guestIp}/24`, mac: "00:16:3e:4c:00:91", bridge: LAB.hostBridge });
    await pair.must("create", ["create", plain.cfg]);
    const runs: Measured[] = [];
    runs.push(await measure("unpinned", "unprotected"));
    await pin(H1, "0");
    runs.push(await measure("pinned", "unprotected"));
    await pin(H1, ALL_CPUS);

    await pair.protect();
    runs.push(await measure("unpinned", "compare"));
    await pair.pinApart();
    runs.push(await measure("pinned", "compare"));
    await pair.endSession();

    const ratio = (placement: Measured["placement"], test: string, clients: number) => {
      const of = (mode: Measured["mode"]) => runs.find((r) => r.placement === placement && r.mode === mode)?.redis.find((f) => f.test === test && f.clients === clients);
      const p = of("compare");
      const u = of("unprotected");
      return p && u ? { opsRatio: Math.round((p.opsPerSec / u.opsPerSec) * 100) / 100, p50Added: Math.round((p.p50Ms - u.p50Ms) * 1000) / 1000, p99Ratio: Math.round((p.p99Ms / u.p99Ms) * 100) / 100 } : null;
    };
    const ratios: Record<string, unknown> = {};
    for (const placement of ["unpinned", "pinned"] as const) for (const test of ["SET", "GET"]) for (const c of [1, 16]) ratios[`${placement} ${test} c=${c}`] = ratio(placement, test, c);
    writeResult("placement", {
      requests,
      placement: { pinned: "primary daemon + engine on CPU 0, secondary's on CPU 1, unprotected VM on CPU 0, redis-benchmark on CPU 1 (taskset -a -p / taskset -c)", unpinned: "no affinity set" },
      targets: { compareOverUnprotected: 0.9, p99OverUnprotected: 2 },
      runs,
      figures: ratios,
    });
  } finally {
    await pair.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`placement: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
