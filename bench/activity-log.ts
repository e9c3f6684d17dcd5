/**
 * The activity log's cost on the write path (docs/specs/activity-log.md):
 * random 4 KiB writes to a raw image through RawDiskBackend, without and
 * with the log's write-ahead hook, same run, same file.
 *
 *   npm run build && node dist/bench/activity-log.js [--mib 256] [--seconds 3] [--dir DIR]
 *
 * Cases: no log; hot set (writes within 16 MiB whose chunks are marked
 * after the first write to each: the steady state between two lazy log
 * replacements); cold set (each write to a chunk not yet marked: the log
 * is emptied before each round of one write per 1 MiB chunk, in random
 * order; the emptying is not timed); uniform over the whole file with the
 * log replaced every 5 s as the primary does. Then the cost of one lazy
 * replacement (fdatasync of the image + atomic rewrite of the log). The
 * file lives in --dir (default the OS's temporary directory): use a real
 * disk, not tmpfs, or the syncs cost nothing. Writes
 * bench/results/activity-log-<timestamp>.json. Not a test; needs no VM.
 */
import { mkdtempSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ActivityLog } from "../src/colo/disk/activity-log.js";
import { DEFAULT_HASH_CHUNK_BYTES } from "../src/colo/disk/image-hash.js";
import { Prng } from "../src/colo/disk/testing.js";
import { RawDiskBackend } from "../src/vm/raw-disk.js";
import { positiveIntArg, stringArg } from "./args.js";
import { writeResult } from "./results.js";

const MiB = 2 ** 20;
const BLOCK = 4096;

interface Figure {
  case: string;
  /** The case without a log it compares with. */
  against?: string;
  writes: number;
  writesPerSecond: number;
  meanUs: number;
  /** Log syncs (marks of a chunk not marked before). */
  logSyncs: number;
}

function timeWrites(raw: RawDiskBackend, seconds: number, next: () => number, between?: () => void): { writes: number; ms: number } {
  const data = new Uint8Array(BLOCK).fill(0x5a);
  let writes = 0;
  let ms = 0;
  const until = performance.now() + seconds * 1000;
  while (performance.now() < until) {
    between?.();
    const t0 = performance.now();
    for (let i = 0; i < 256; i++) {
      raw.write(next(), data);
      writes++;
    }
    ms += performance.now() - t0;
  }
  return { writes, ms };
}

function main(): void {
  const mib = positiveIntArg("--mib", 256);
  const seconds = positiveIntArg("--seconds", 3);
  const dir = mkdtempSync(join(stringArg("--dir", tmpdir()), "colo-al-bench-"));
  try {
    const path = join(dir, "disk.img");
    const size = mib * MiB;
    const chunks = size / DEFAULT_HASH_CHUNK_BYTES;
    // A written file (not sparse): the writes below overwrite allocated blocks, as a guest's do.
    writeFileSync(path, Buffer.alloc(size));
    const raw = RawDiskBackend.open(path, false);
    raw.flush();
    const rng = new Prng(20261202);
    const blocks = size / BLOCK;
    const header = { lineage: new Uint8Array(16).fill(1), kind: "primary" as const, seq: 0, size, chunkSize: DEFAULT_HASH_CHUNK_BYTES };
    const figures: Figure[] = [];
    const record = (name: string, r: { writes: number; ms: number }, logSyncs: number, against?: string) =>
      figures.push({ case: name, ...(against ? { against } : {}), writes: r.writes, writesPerSecond: Math.round((r.writes / r.ms) * 1000), meanUs: Math.round((r.ms / r.writes) * 1000 * 10) / 10, logSyncs });

    const uniform = () => rng.int(blocks) * BLOCK;
    const hotBlocks = (16 * MiB) / BLOCK;
    const hot = () => rng.int(hotBlocks) * BLOCK;

    // Warm-up (not recorded): the file's pages in the cache, the JIT warm.
    timeWrites(raw, seconds, uniform);
    const log = ActivityLog.create(path, header, []);
    const hook = (o: number, l: number): void => void log.mark(o, l);
    // Steady state, A/B interleaved in 1 s rounds (this host is shared and noisy): the median round of each.
    const rounds = 2 * seconds + 1;
    const ab = (name: string, next: () => number): void => {
      const without: { writes: number; ms: number }[] = [];
      const withLog: { writes: number; ms: number }[] = [];
      const before = log.syncs;
      for (let r = 0; r < rounds; r++) {
        raw.beforeWrite = undefined;
        without.push(timeWrites(raw, 1, next));
        raw.beforeWrite = hook;
        withLog.push(timeWrites(raw, 1, next));
      }
      const median = (xs: { writes: number; ms: number }[]) => [...xs].sort((a, b) => a.writes / a.ms - b.writes / b.ms)[rounds >> 1] ?? { writes: 0, ms: 1 };
      record(`no log, ${name}`, median(without), 0);
      record(`log, ${name}`, median(withLog), log.syncs - before, `no log, ${name}`);
    };
    ab("hot 16 MiB (its chunks marked after the first write to each)", hot);
    log.replace(header, []);
    ab("uniform over the file (every chunk marked within the first round)", uniform);
    raw.beforeWrite = hook;
    let before = log.syncs;

    // Cold: every write to a chunk not marked yet (one per chunk, random order), the log emptied between rounds.
    let order: number[] = [];
    let at = 0;
    const cold = () => {
      if (at >= order.length) {
        order = Array.from({ length: chunks }, (_, c) => c);
        for (let i = order.length - 1; i > 0; i--) {
          const j = rng.int(i + 1);
          [order[i], order[j]] = [order[j] as number, order[i] as number];
        }
        at = 0;
        log.replace(header, []);
      }
      const c = order[at++] as number;
      return c * DEFAULT_HASH_CHUNK_BYTES + rng.int(DEFAULT_HASH_CHUNK_BYTES / BLOCK) * BLOCK;
    };
    before = log.syncs;
    record("log, cold (every write to an unmarked chunk: one fdatasync each)", timeWrites(raw, seconds, cold), log.syncs - before, "no log, uniform over the file (every chunk marked within the first round)");

    // Uniform with the log replaced every 5 s (the primary's lazy clearing), the replacement's cost included.
    log.replace(header, []);
    let last = performance.now();
    before = log.syncs;
    const uniformRun = timeWrites(raw, Math.max(seconds, 6), uniform, () => {
      if (performance.now() - last >= 5000) {
        raw.flush();
        log.replace(header, []);
        last = performance.now();
      }
    });
    record("log, uniform, replaced every 5 s (image fdatasync + log rewrite included)", uniformRun, log.syncs - before, "no log, uniform over the file (every chunk marked within the first round)");

    // One lazy replacement: the image's fdatasync, then the log's atomic rewrite (with half the chunks marked).
    const marked = Array.from({ length: chunks / 2 }, (_, i) => 2 * i);
    const flushMs: number[] = [];
    const replaceMs: number[] = [];
    raw.flush();
    for (let i = 0; i < 10; i++) {
      for (let w = 0; w < 64; w++) raw.write(uniform(), new Uint8Array(BLOCK));
      const t0 = performance.now();
      raw.flush();
      const t1 = performance.now();
      log.replace(header, marked);
      flushMs.push(t1 - t0);
      replaceMs.push(performance.now() - t1);
    }
    replaceMs.sort((a, b) => a - b);
    flushMs.sort((a, b) => a - b);
    raw.beforeWrite = undefined;
    log.close();
    raw.close();
    const rate = (name: string | undefined): number => figures.find((f) => f.case === name)?.writesPerSecond ?? 1;
    const fs = statfsSync(dir);
    writeResult("activity-log", {
      guest: null,
      setup: { imageMiB: mib, writeBytes: BLOCK, chunkBytes: DEFAULT_HASH_CHUNK_BYTES, seconds, dir, filesystemType: `0x${fs.type.toString(16)}` },
      figures: {
        cases: figures.map((f) => (f.against ? { ...f, ofNoLog: Math.round((f.writesPerSecond / rate(f.against)) * 1000) / 1000 } : f)),
        // One lazy replacement after 64 scattered writes: the image's fdatasync (off the event loop in colo) and the log's atomic rewrite.
        lazyReplacement: {
          imageFdatasyncMedianMs: Math.round((flushMs[5] ?? 0) * 100) / 100,
          imageFdatasyncMaxMs: Math.round((flushMs[9] ?? 0) * 100) / 100,
          logRewriteMedianMs: Math.round((replaceMs[5] ?? 0) * 100) / 100,
          logRewriteMaxMs: Math.round((replaceMs[9] ?? 0) * 100) / 100,
          markedChunks: marked.length,
        },
      },
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main();
