import assert from "node:assert/strict";
import { test } from "node:test";
import {
  engineTargets,
  failedRun,
  figureRatios,
  flatFigures,
  isEngineRun,
  opsRatios,
  pauseSize,
  redisTable,
  spread,
  type EngineRun,
  type PauseSample,
  type RedisTable,
} from "./engine-figures.js";
import { parseMigrate, remusRequestsPerTest } from "./lab-session.js";

const table = (set1: number, get1: number, set16: number, get16: number): RedisTable =>
  redisTable(
    (
      [
        ["SET", 1, set1],
        ["GET", 1, get1],
        ["SET", 16, set16],
        ["GET", 16, get16],
      ] as const
    ).map(([t, clients, ops]) => ({ test: t, clients, requests: 1000, opsPerSec: ops, avgMs: 1, p50Ms: 1, p99Ms: 2, maxMs: 3 })),
  );

function sample(pages: number, save: number, load: number): PauseSample {
  return {
    checkpoint: 1,
    pauseMs: 10 + pages / 100,
    statusPauseMs: 10,
    pages,
    sameCheckpoint: true,
    breakdownMs: { pause: 1, saveState: save },
    secondaryMs: { applyPages: 1, loadState: load },
    deviceStateMs: save + load,
    dirtyMs: 2,
  };
}

function engineRun(engine: "emu" | "qemu", bootMs: number, t: RedisTable, deviceMs: number[]): EngineRun {
  const run = failedRun(engine, "not measured");
  run.phases.boot = { ok: true, seconds: 1, figures: { bootToReadyMs: bootMs, guestBootMs: bootMs - 100 } };
  run.phases.unprotected = { ok: true, seconds: 1, figures: { warmupRequests: 2000, redis: t } };
  const samples = deviceMs.map((d) => sample(100, d / 2, d / 2));
  run.phases.checkpointPause = {
    ok: true,
    seconds: 1,
    figures: { checkpointMaxIntervalMs: 600_000, bufferPages: 1001, sizes: { "100": pauseSize(100, samples) }, deviceStateMs: spread(samples.map((s) => s.deviceStateMs ?? NaN)) },
  };
  return run;
}

test("spread: min, median (even and odd counts), max; NaN ignored; none is undefined", () => {
  assert.deepEqual(spread([3, 1, 2]), { n: 3, min: 1, median: 2, max: 3 });
  assert.deepEqual(spread([4, 1, NaN, 2, 3]), { n: 4, min: 1, median: 2.5, max: 4 });
  assert.equal(spread([NaN]), undefined);
  assert.equal(spread([]), undefined);
});

test("redisTable keys by test and clients; opsRatios divides ops/s", () => {
  const base = table(100, 200, 400, 800);
  assert.equal(base["SET c=16"]?.opsPerSec, 400);
  assert.deepEqual(opsRatios(table(50, 100, 200, 400), base), { "SET c=1": 0.5, "GET c=1": 0.5, "SET c=16": 0.5, "GET c=16": 0.5 });
});

test("pauseSize: spreads of the pause, pages and each breakdown phase", () => {
  const s = pauseSize(100, [sample(110, 2, 3), sample(120, 4, 5), sample(130, 6, 7)]);
  assert.equal(s.pages?.median, 120);
  assert.equal(s.breakdownMs.saveState?.max, 6);
  assert.equal(s.secondaryMs.loadState?.min, 3);
  assert.equal(s.deviceStateMs?.median, 9);
});

test("flatFigures: numbers of successful phases by path, no arrays, no settings; figureRatios", () => {
  const emu = engineRun("emu", 20_000, table(100, 200, 400, 800), [10, 20, 30]);
  const f = flatFigures(emu);
  assert.equal(f["boot.bootToReadyMs"], 20_000);
  assert.equal(f["unprotected.redis.SET c=16.opsPerSec"], 400);
  assert.equal(f["checkpointPause.sizes.100.deviceStateMs.median"], 20);
  assert.equal(f["unprotected.warmupRequests"], undefined);
  assert.equal(f["unprotected.redis.SET c=16.requests"], undefined);
  assert.ok(!Object.keys(f).some((k) => k.includes("samples") || k.startsWith("compare")));
  const qemu = engineRun("qemu", 4000, table(400, 800, 1600, 3200), [5, 6, 7]);
  const r = figureRatios(flatFigures(qemu), f);
  assert.equal(r["boot.bootToReadyMs"], 0.2);
  assert.equal(r["unprotected.redis.GET c=1.opsPerSec"], 4);
});

test("engineTargets: boot, unprotected ratio (the smallest counts), device state per engine", () => {
  const emu = engineRun("emu", 20_000, table(100, 200, 400, 800), [10, 20, 30]);
  const qemu = engineRun("qemu", 4000, table(400, 800, 1200, 3200), [5, 6, 7]);
  const t = engineTargets({ emu, qemu });
  assert.deepEqual([t.bootQemu?.measured, t.bootQemu?.met], [4000, true]);
  assert.deepEqual([t.unprotectedRedisQemuVsEmu?.measured, t.unprotectedRedisQemuVsEmu?.met], [3, true]);
  assert.deepEqual([t.deviceState_emu?.measured, t.deviceState_emu?.met], [20, true]);
  assert.deepEqual([t.deviceState_qemu?.measured, t.deviceState_qemu?.met], [6, true]);
});

test("engineTargets: a failed phase or a missing engine is not measured, not met", () => {
  const qemu = engineRun("qemu", 6000, table(400, 800, 1600, 3200), [25]);
  qemu.phases.checkpointPause = { ok: false, seconds: 1, error: "boom" };
  const t = engineTargets({ qemu });
  assert.deepEqual([t.bootQemu?.measured, t.bootQemu?.met], [6000, false]);
  assert.deepEqual([t.unprotectedRedisQemuVsEmu?.measured, t.unprotectedRedisQemuVsEmu?.met], [null, false]);
  assert.deepEqual([t.deviceState_qemu?.measured, t.deviceState_qemu?.met], [null, false]);
  assert.equal(t.deviceState_emu, undefined);
});

test("isEngineRun checks the engine and every phase", () => {
  const run = failedRun("qemu", "x");
  assert.ok(isEngineRun(JSON.parse(JSON.stringify(run)), "qemu"));
  assert.ok(!isEngineRun(run, "emu"));
  assert.ok(!isEngineRun({ engine: "qemu", phases: { boot: { ok: true } } }, "qemu"));
  assert.ok(!isEngineRun(null, "qemu"));
});

test("parseMigrate reads colo migrate's lines; remusRequestsPerTest scales to the interval", () => {
  const out =
    "beng: round 0: 40960 pages (30000 zero), 42.0 MiB at 250.5 MB/s, 61000 pages/s\n" +
    "beng: round 1 (final, guest paused): 35 pages (0 zero), 0.1 MiB at 90.0 MB/s, 9000 pages/s\n" +
    "beng: migrated to 10.88.0.2:7000 in 310 ms (2 rounds, 40995 pages, 42.1 MiB); downtime 19 ms\n";
  assert.deepEqual(parseMigrate(out, "idle"), { load: "idle", totalMs: 310, rounds: 2, wireMiB: 42.1, downtimeMs: 19, round0MBps: 250.5, round0PagesPerSec: 61000, finalPages: 35 });
  assert.throws(() => parseMigrate("nothing", "idle"), /cannot read/);
  assert.equal(remusRequestsPerTest(5000, 100, 1), 200);
  assert.equal(remusRequestsPerTest(5000, 100, 16), 3200);
  assert.equal(remusRequestsPerTest(1000, 100, 16), 1000);
  assert.equal(remusRequestsPerTest(5000, 1000, 1), 20);
});
