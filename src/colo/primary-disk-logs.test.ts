/**
 * PrimaryDiskLogs: the lazy replacement of the primary's activity log after
 * the secondary's DISK_SYNCED never drops a chunk written after the pause of
 * the checkpoint the log names (a seeded property test over random writes,
 * pauses and acknowledgements), replaces at most once per interval, syncs the
 * image first, and stops with the session.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { readLog } from "./disk/activity-log.js";
import { DEFAULT_HASH_CHUNK_BYTES } from "./disk/image-hash.js";
import { ImageLog } from "./disk/image-log.js";
import { HookedDisk, makeSpillDir, Prng } from "./disk/testing.js";
import { PrimaryDiskLogs } from "./primary-disk-logs.js";

const MiB = DEFAULT_HASH_CHUNK_BYTES;
const CHUNKS = 48;
const LINEAGE = new Uint8Array(16).fill(4);

function setup(t: { after(fn: () => void): void }, name: string) {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const disk = new HookedDisk(CHUNKS * MiB);
  const path = join(spill.dir, `${name}.img`);
  const log = new ImageLog(path, (hook) => (disk.beforeWrite = hook));
  t.after(() => log.close());
  let clock = 0;
  const events: string[] = [];
  const logs = new PrimaryDiskLogs(
    [{ index: 0, local: disk, log, sync: () => (events.push("image synced"), Promise.resolve()) }],
    { fullDiskSync: false, log: () => undefined, rewriteIntervalMs: 5000, now: () => clock },
  );
  logs.begin({ lineage: LINEAGE, disks: [{ disk: 0, flags: 0, lineage: new Uint8Array(16), kind: 0, chunkSize: 0, seq: 0, size: 0, chunks: [] }] });
  disk.onWrite = (offset, data) => logs.wrote(0, offset, data.length);
  return { disk, path, log, logs, events, tick: (ms: number) => (clock += ms) };
}

test("primary disk logs: a replacement never drops a chunk written after the pause of the checkpoint it names (seeded)", async (t) => {
  for (let seed = 1; seed <= 25; seed++) {
    const rng = new Prng(seed);
    const s = setup(t, `disk${seed}`);
    /** The epoch of each chunk's last write (-1: before checkpoint 0's pause). */
    const lastWrite = new Map<number, number>();
    let epoch = -1;
    let applied = -1;
    let synced = -1;
    for (let op = 0; op < 300; op++) {
      const r = rng.next();
      if (r < 0.6) {
        const chunk = rng.int(CHUNKS);
        s.disk.write(chunk * MiB + rng.int(MiB - 512), rng.bytes(512));
        lastWrite.set(chunk, epoch);
      } else if (r < 0.75) {
        s.logs.paused(++epoch);
      } else if (r < 0.9) {
        if (applied < epoch) applied++;
      } else if (applied > synced) {
        // The secondary's images hold some applied checkpoint durably, at most the last applied.
        synced = synced + 1 + rng.int(applied - synced);
        await s.logs.synced(synced);
      }
      s.tick(rng.int(2000));
      const log = readLog(s.path);
      if (!log) continue;
      assert.ok(log.header.seq <= synced, `seed ${seed}: the log names checkpoint ${log.header.seq}, only ${synced} is durable on the secondary`);
      const marked = new Set(log.chunks);
      for (const [chunk, e] of lastWrite) {
        if (e >= log.header.seq) assert.ok(marked.has(chunk), `seed ${seed} op ${op}: chunk ${chunk} written in epoch ${e} is missing from a log relative to checkpoint ${log.header.seq}`);
      }
    }
  }
});

test("primary disk logs: replaced at once the first time, then at most every interval, the image synced first", async (t) => {
  const s = setup(t, "lazy");
  s.logs.paused(0);
  s.disk.write(3 * MiB, new Uint8Array(10));
  await s.logs.synced(0);
  assert.deepEqual(s.events, ["image synced"]);
  assert.deepEqual(readLog(s.path)?.chunks, [3], "the first DISK_SYNCED: the session's log at once");
  assert.equal(readLog(s.path)?.header.seq, 0);
  s.logs.paused(1);
  s.disk.write(7 * MiB, new Uint8Array(10));
  s.logs.paused(2);
  s.tick(1000);
  await s.logs.synced(1);
  assert.equal(readLog(s.path)?.header.seq, 0, "within the interval: the log stays as it is (a superset)");
  assert.deepEqual(readLog(s.path)?.chunks, [3, 7], "but it marked the new write first");
  s.tick(5000);
  await s.logs.synced(2);
  assert.equal(readLog(s.path)?.header.seq, 2);
  assert.deepEqual(readLog(s.path)?.chunks, [], "chunks written before checkpoint 2's pause are dropped");
  assert.equal(s.events.length, 2, "one image sync per replacement");
  s.logs.stop();
  s.disk.write(9 * MiB, new Uint8Array(1));
  s.tick(10_000);
  s.logs.paused(3);
  await s.logs.synced(3);
  assert.equal(readLog(s.path)?.header.seq, 2, "after the session nothing is replaced");
  assert.deepEqual(readLog(s.path)?.chunks, [9], "and every write is still marked");
});
