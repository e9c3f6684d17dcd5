/**
 * Unprotected baseline (issue: foundation): boot time to Redis ready,
 * redis-benchmark SET/GET with 1 and 16 clients, host CPU of an idle guest.
 * Every later COLO figure is divided by these, measured in the same run.
 *
 *   npm run build && node dist/bench/baseline.js [--requests N]
 *
 * Writes bench/results/baseline-<timestamp>.json. Not a test: never fails
 * for being slow. Needs root and the guest image.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { labDown, labUp } from "../src/lab/lab.js";
import { createDataDisk } from "../guest/mkdisk.js";
import { COLO_BIN, runIn } from "../test/tools/run.js";
import { writeGuestConfig } from "../test/tools/guest-fixture.js";
import { writeResult } from "./results.js";
import { positiveIntArg } from "./args.js";
import { CLOCK_TICKS_PER_SEC, cpuTicks } from "./cpu.js";
import { redisBenchmark, type RedisBenchFigure } from "./redis-benchmark.js";

const PREFIX = "cbench";
const HOST = `${PREFIX}-h1`;
const CLIENT = `${PREFIX}-client`;
const GUEST_IP = "10.77.0.10";


async function main(): Promise<void> {
  const requests = positiveIntArg("--requests", 2000);
  const idleSeconds = positiveIntArg("--idle-seconds", 10);
  const work = mkdtempSync(join(tmpdir(), "colo-bench-"));
  const env = { ...process.env, COLO_RUN_DIR: join(work, "run") };
  await labUp({ prefix: PREFIX });
  try {
    const disk = join(work, "data.img");
    await createDataDisk(disk, 64);
    const f = writeGuestConfig({ dir: work, name: "bench", ip: `${GUEST_IP}/24`, mac: "00:16:3e:4c:00:20", bridge: "colobr", disk });
    const t0 = Date.now();
    const created = await runIn(HOST, COLO_BIN, ["create", f.cfg], { env, timeoutMs: 600_000 });
    if (created.code !== 0) throw new Error(`create failed: ${created.stderr}`);
    const bootToReadyMs = Date.now() - t0;
    const guestBootMs = Number(/ready in ([\d.]+) s/.exec(created.stdout)?.[1] ?? NaN) * 1000;

    const list = JSON.parse((await runIn(HOST, COLO_BIN, ["list", "--json"], { env })).stdout) as { name: string; pid: number }[];
    const pid = list.find((v) => v.name === "bench")?.pid;
    if (!pid) throw new Error("bench VM not listed");
    const before = cpuTicks(pid);
    const idleStart = Date.now();
    await new Promise((r) => setTimeout(r, idleSeconds * 1000)); // measuring an idle interval is the point here
    const idleCpuPercent = ((cpuTicks(pid) - before) / CLOCK_TICKS_PER_SEC / ((Date.now() - idleStart) / 1000)) * 100;

    const figures: RedisBenchFigure[] = [];
    for (const clients of [1, 16]) {
      figures.push(...(await redisBenchmark(CLIENT, GUEST_IP, { tests: "set,get", requests, clients })));
    }
    await runIn(HOST, COLO_BIN, ["destroy", "bench"], { env, timeoutMs: 60_000 });

    writeResult("baseline", {
      figures: {
        bootToReadyMs,
        guestBootMs,
        idleHostCpuPercentOfOneCore: Number(idleCpuPercent.toFixed(1)),
        redis: figures,
      },
    });
  } finally {
    await runIn(HOST, COLO_BIN, ["destroy", "bench"], { env, timeoutMs: 60_000 }).catch(() => undefined);
    await labDown({ prefix: PREFIX });
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
