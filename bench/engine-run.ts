/**
 * One engine's part of bench/engines.ts, run by it as a child process with
 * COLO_TEST_ENGINE=<engine> (the guest config's engine, image and memory
 * follow it: test/tools/guest-fixture.ts). On the lab engines.ts set up
 * (prefix cbeng), in order:
 *
 * 1. boot: `colo create` until it returns (guest ready: Redis answers);
 * 2. unprotected Redis SET/GET, 1 and 16 clients (after a warm-up run);
 * 3. COLO compare mode, then Remus (100 ms), each after a warm-up; ops/s
 *    over the unprotected run's;
 * 4. checkpoint pause for ~N dirty pages (--pages, default 100,1000; each
 *    --repeats times): a compare-mode pair with checkpoints only when asked
 *    (--checkpoint-max-interval 600000); a Lua EVAL writes a few bytes at
 *    every 4 KiB of a Redis string, so N distinct pages of the guest change,
 *    then `colo checkpoint`, then `colo status` on both sides: the pause,
 *    the pages sent, the primary's and the secondary's breakdowns;
 * 5. live migration, idle, --migrations times back and forth: downtime.
 *
 * A phase that fails records its error and the next ones still run. Prints
 * one JSON line (EngineRun, engine-figures.ts) on stdout; progress on
 * stderr. Exit 1 if a phase failed.
 *
 *   COLO_TEST_ENGINE=qemu node dist/bench/engine-run.js --work DIR [--requests N] [--pages 100,1000] [--repeats 5] [--migrations 3]
 */
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { labTopology } from "../src/lab/lab.js";
import { generateKeyFile } from "../src/channel/key.js";
import { GUEST_CACHE, TEST_ENGINE, writeGuestConfig } from "../test/tools/guest-fixture.js";
import { Pair } from "../test/tools/pair-fixture.js";
import type { RunResult } from "../test/tools/run.js";
import { positiveIntArg, positiveIntListArg, stringArg } from "./args.js";
import { redisBenchmark, type RedisBenchFigure } from "./redis-benchmark.js";
import { allocateDirtyBuffer, dirtyPages } from "./dirty-pages.js";
import { endSession, parseMigrate, remusRequestsPerTest, startMigrateReceive, type ColoRunner, type MigrationFigure } from "./lab-session.js";
import {
  ENGINES_LAB_PREFIX,
  ENGINES_VM_NAME,
  REMUS_INTERVAL_MS,
  opsRatios,
  pauseSize,
  redisTable,
  spread,
  type BootFigures,
  type EngineGuest,
  type EngineRun,
  type MigrationFigures,
  type PauseFigures,
  type PauseSample,
  type PauseSize,
  type Phase,
  type ProtectedFigures,
  type RedisTable,
  type UnprotectedFigures,
} from "./engine-figures.js";

const LAB = labTopology(ENGINES_LAB_PREFIX);
const [H1, H2] = LAB.hosts;
const NAME = ENGINES_VM_NAME;
const CHECKPOINT_MAX_INTERVAL_MS = 600_000;
const WARMUP_REQUESTS = 2000;
/** Remus: a reply waits for the next checkpoint; a short warm-up (16 clients, about 1.5 s at 100 ms). */
const REMUS_WARMUP_REQUESTS = 200;

interface Replication {
  checkpoints: number;
  lastPauseMs: number;
  p99PauseMs: number;
  pagesPerCheckpoint: number;
  checkpointReasons?: Record<string, number>;
  lastPauseBreakdownMs?: Record<string, number>;
}
interface Status {
  engine?: string;
  accelerator?: string;
  memoryMiB?: number;
  replication?: Replication;
}

const log = (line: string) => process.stderr.write(`engine-run[${TEST_ENGINE}]: ${line}\n`);
const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

async function phase<T>(name: string, fn: () => Promise<T>): Promise<Phase<T>> {
  log(`${name} ...`);
  const t0 = Date.now();
  const seconds = () => Math.round((Date.now() - t0) / 100) / 10;
  try {
    const figures = await fn();
    log(`${name}: done in ${seconds()} s`);
    return { ok: true, seconds: seconds(), figures };
  } catch (err) {
    log(`${name}: FAILED: ${message(err)}`);
    return { ok: false, seconds: seconds(), error: message(err) };
  }
}

const skipped = (why: string): Phase<never> => ({ ok: false, seconds: 0, error: `skipped: ${why}` });

function readGuest(): EngineGuest {
  const manifest = join(GUEST_CACHE, "manifest.json");
  try {
    const m = JSON.parse(readFileSync(manifest, "utf8")) as { arch?: string; kernelRelease?: string; packages?: Record<string, string> };
    return { manifest, arch: m.arch ?? "?", kernelRelease: m.kernelRelease ?? "?", redis: m.packages?.["redis-server"] ?? "?" };
  } catch (err) {
    return { manifest, error: message(err) };
  }
}

async function main(): Promise<void> {
  const requests = positiveIntArg("--requests", 5000);
  const pageSizes = positiveIntListArg("--pages", [100, 1000]);
  const repeats = positiveIntArg("--repeats", 5);
  const migrations = positiveIntArg("--migrations", 3);
  const work = stringArg("--work");
  mkdirSync(work, { recursive: true });
  const key = join(work, "key");
  generateKeyFile(key, true);
  const pair = new Pair(LAB, NAME, join(work, "run"), key);
  const colo: ColoRunner = (host, args) => pair.colo(host, args, {}, 600_000);
  const must = async (what: string, p: Promise<RunResult>): Promise<RunResult> => {
    const r = await p;
    if (r.code !== 0) throw new Error(`${what}: ${(r.stderr || r.stdout).trim()}`);
    return r;
  };
  const status = async (host: string): Promise<Status> => JSON.parse((await must(`status on ${host}`, colo(host, ["status", NAME]))).stdout) as Status;
  const bench = async (tests: string, n: (clients: number) => number, clientsList: number[]): Promise<RedisBenchFigure[]> => {
    const out: RedisBenchFigure[] = [];
    for (const clients of clientsList) out.push(...(await redisBenchmark(LAB.namespaces.client, LAB.guestIp, { tests, requests: n(clients), clients, timeoutMs: 900_000 })));
    return out;
  };

  /**
   * A protected session of the running VM: `args` protect it, `body` measures;
   * the session then ends in order. On a failure the session is ended as far as it can be.
   */
  const session = async <T>(args: string[], body: (startMs: number) => Promise<T>): Promise<T> => {
    await pair.listenSecondary();
    const t0 = Date.now();
    let out: T;
    try {
      await must(args[0] ?? "protect", colo(H1, args));
      out = await body(Date.now() - t0);
    } catch (err) {
      await endSession(colo, H1, H2, NAME).catch(() => undefined);
      await colo(H2, ["destroy", NAME]).catch(() => undefined);
      throw err;
    }
    await endSession(colo, H1, H2, NAME);
    return out;
  };

  const run: EngineRun = {
    engine: TEST_ENGINE,
    guest: readGuest(),
    vm: null,
    phases: {
      boot: skipped("not run"),
      unprotected: skipped("not run"),
      compare: skipped("not run"),
      remus: skipped("not run"),
      checkpointPause: skipped("not run"),
      migration: skipped("not run"),
    },
  };
  const p = run.phases;
  try {
    await pair.destroyAll();
    // 1. Boot to Redis ready.
    p.boot = await phase("boot", async (): Promise<BootFigures> => {
      const f = writeGuestConfig({ dir: join(work, "guest"), name: NAME, ip: `${LAB.guestIp}/24`, mac: "00:16:3e:4c:00:b0", bridge: LAB.hostBridge });
      const t0 = Date.now();
      const created = await must("create", colo(H1, ["create", f.cfg]));
      const bootToReadyMs = Date.now() - t0;
      const guest = Number(/ready in ([\d.]+) s/.exec(created.stdout)?.[1] ?? NaN) * 1000;
      const s = await status(H1);
      run.vm = { engine: s.engine ?? null, accelerator: s.accelerator ?? null, memoryMiB: s.memoryMiB ?? null };
      if (s.engine !== TEST_ENGINE) throw new Error(`the VM runs on engine ${s.engine ?? "?"}, not ${TEST_ENGINE}`);
      return { bootToReadyMs, guestBootMs: Number.isFinite(guest) ? Math.round(guest) : null };
    });
    if (!p.boot.ok) {
      const why = `boot failed: ${p.boot.error}`;
      p.unprotected = p.compare = p.remus = p.checkpointPause = p.migration = skipped(why);
      return;
    }

    // 2. Unprotected, after a warm-up (the first benchmark after a boot is slower).
    p.unprotected = await phase("unprotected Redis", async (): Promise<UnprotectedFigures> => {
      await bench("set,get", () => WARMUP_REQUESTS, [16]);
      return { warmupRequests: WARMUP_REQUESTS, redis: redisTable(await bench("set,get", () => requests, [1, 16])) };
    });
    const unprotected: RedisTable | undefined = p.unprotected.ok ? p.unprotected.figures.redis : undefined;

    // 3. COLO compare mode and Remus, each against that baseline.
    const measured = async (verb: string, startMs: number, warmup: number, n: (clients: number) => number): Promise<ProtectedFigures> => {
      await bench("set,get", () => warmup, [16]); // warm-up: the SVM's JIT / code cache after checkpoint 0
      const before = (await status(H1)).replication;
      const t0 = Date.now();
      const redis = redisTable(await bench("set,get", n, [1, 16]));
      const seconds = (Date.now() - t0) / 1000;
      const after = (await status(H1)).replication;
      const checkpoints = (after?.checkpoints ?? 0) - (before?.checkpoints ?? 0);
      const reasons: Record<string, number> = {};
      for (const [k, v] of Object.entries(after?.checkpointReasons ?? {})) reasons[k] = v - (before?.checkpointReasons?.[k] ?? 0);
      return {
        verb,
        startMs,
        warmupRequests: warmup,
        redis,
        vsUnprotected: unprotected ? opsRatios(redis, unprotected) : {},
        seconds: Math.round(seconds * 10) / 10,
        checkpoints,
        checkpointsPerMinute: Math.round((checkpoints / seconds) * 60 * 10) / 10,
        checkpointReasons: reasons,
        p99PauseMs: after?.p99PauseMs ?? 0,
      };
    };
    p.compare = await phase("COLO compare mode", () =>
      session(["migrate", "--colo", NAME, LAB.replIps[1], "--key-file", key], (startMs) => measured("migrate --colo", startMs, WARMUP_REQUESTS, () => requests)),
    );
    p.remus = await phase(`Remus ${REMUS_INTERVAL_MS} ms`, () =>
      session(["remus", NAME, LAB.replIps[1], "--key-file", key, "--interval", String(REMUS_INTERVAL_MS)], (startMs) =>
        measured(`remus --interval ${REMUS_INTERVAL_MS}`, startMs, REMUS_WARMUP_REQUESTS, (clients) => remusRequestsPerTest(requests, REMUS_INTERVAL_MS, clients)),
      ),
    );

    // 4. Checkpoint pause and its breakdown for ~N dirty pages.
    p.checkpointPause = await phase("checkpoint pause", () =>
      session(["migrate", "--colo", NAME, LAB.replIps[1], "--key-file", key, "--checkpoint-max-interval", String(CHECKPOINT_MAX_INTERVAL_MS)], async (): Promise<PauseFigures> => {
        const bufferPages = Math.max(...pageSizes) + 1;
        // One string of bufferPages pages (zero-filled by Redis); its allocation's pages go with the warm-up checkpoint.
        await allocateDirtyBuffer((...a) => pair.redis(...a), bufferPages);
        let seq = 0;
        const dirty = async (pages: number): Promise<number> => {
          // A tag new each time: the bytes written differ from what the pages held (emu finds dirty pages by comparing RAM).
          const tag = `t${String(seq++).padStart(7, "0")}`;
          const t0 = Date.now();
          await dirtyPages((...a) => pair.redis(...a), pages, tag);
          return Date.now() - t0;
        };
        const checkpoint = async (dirtyMs: number): Promise<PauseSample> => {
          const cp = JSON.parse((await must("checkpoint", colo(H1, ["checkpoint", NAME]))).stdout) as { checkpoint: number; pauseMs: number };
          const pr = (await status(H1)).replication;
          const sr = (await status(H2)).replication;
          const breakdownMs = pr?.lastPauseBreakdownMs ?? {};
          const secondaryMs = sr?.lastPauseBreakdownMs ?? {};
          const save = breakdownMs.saveState;
          const load = secondaryMs.loadState;
          return {
            checkpoint: cp.checkpoint,
            pauseMs: cp.pauseMs,
            statusPauseMs: pr?.lastPauseMs ?? NaN,
            pages: pr?.pagesPerCheckpoint ?? NaN,
            // The primary counts checkpoint 0, the secondary the checkpoints it applied after it.
            sameCheckpoint: pr?.checkpoints === cp.checkpoint + 1 && sr?.checkpoints === cp.checkpoint,
            breakdownMs,
            secondaryMs,
            deviceStateMs: save !== undefined && load !== undefined ? Math.round((save + load) * 10) / 10 : null,
            dirtyMs,
          };
        };
        // Warm-up: the script's first run and the buffer's allocation dirty pages of their own.
        await checkpoint(await dirty(bufferPages - 1));
        const sizes: Record<string, PauseSize> = {};
        const all: PauseSample[] = [];
        for (const pages of pageSizes) {
          const samples: PauseSample[] = [];
          for (let i = 0; i < repeats; i++) samples.push(await checkpoint(await dirty(pages)));
          sizes[String(pages)] = pauseSize(pages, samples);
          all.push(...samples);
          const s = sizes[String(pages)];
          log(`~${pages} pages: pause median ${s?.pauseMs?.median ?? "?"} ms (max ${s?.pauseMs?.max ?? "?"}), pages median ${s?.pages?.median ?? "?"}`);
        }
        return { checkpointMaxIntervalMs: CHECKPOINT_MAX_INTERVAL_MS, bufferPages, sizes, deviceStateMs: spread(all.map((s) => s.deviceStateMs ?? NaN)) };
      }),
    );

    // 5. Live migration, idle, back and forth.
    p.migration = await phase("live migration (idle)", async (): Promise<MigrationFigures> => {
      const runs: MigrationFigure[] = [];
      let from: string = H1;
      for (let i = 0; i < migrations; i++) {
        const to = from === H1 ? H2 : H1;
        const toIp = to === H1 ? LAB.replIps[0] : LAB.replIps[1];
        const recv = await startMigrateReceive({ env: pair.env(), host: to, listenIp: toIp, keyFile: key });
        try {
          const m = await must("migrate", colo(from, ["migrate", NAME, toIp, "--key-file", key]));
          runs.push(parseMigrate(m.stdout, "idle"));
        } catch (err) {
          recv.kill();
          throw err;
        }
        await recv.closed;
        from = to;
      }
      return { runs, downtimeMs: spread(runs.map((r) => r.downtimeMs)), totalMs: spread(runs.map((r) => r.totalMs)) };
    });
  } finally {
    await pair.destroyAll();
    process.stdout.write(JSON.stringify(run) + "\n");
    process.exitCode = Object.values(run.phases).every((ph) => ph.ok) ? 0 : 1;
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`engine-run: ${message(err)}\n`);
  process.exitCode = 1;
});
