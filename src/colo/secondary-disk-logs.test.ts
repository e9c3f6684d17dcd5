/**
 * SecondaryDiskLogs: what DISK_LOG reports, the replica log only once the
 * image holds a checkpoint durably (then DISK_SYNCED), at most one sync at a
 * time and one per interval, and a takeover's survivor log naming the
 * overlay and every chunk written since the last completed sync, even with a
 * sync still in flight (which then writes nothing over it).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { readLog } from "./disk/activity-log.js";
import { DEFAULT_HASH_CHUNK_BYTES } from "./disk/image-hash.js";
import { ImageLog } from "./disk/image-log.js";
import { HookedDisk, makeSpillDir } from "./disk/testing.js";
import { SecondaryDiskLogs } from "./secondary-disk-logs.js";

const MiB = DEFAULT_HASH_CHUNK_BYTES;

function setup(t: { after(fn: () => void): void }) {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const disk = new HookedDisk(16 * MiB);
  const path = join(spill.dir, "b.img");
  const log = new ImageLog(path, (hook) => (disk.beforeWrite = hook));
  t.after(() => log.close());
  let release: (() => void) | undefined;
  let syncs = 0;
  const touched: Set<number>[] = [];
  let clock = 0;
  const told: number[] = [];
  const logs = new SecondaryDiskLogs(
    [
      {
        index: 0,
        raw: disk,
        spillDir: spill.dir,
        interpose: () => undefined,
        log,
        sync: () => {
          syncs++;
          return new Promise<void>((r) => (release = r));
        },
      },
    ],
    { replicated: new Set([0]), takeTouchedChunks: () => new Map([[0, touched.shift() ?? new Set<number>()]]) },
    { log: () => undefined, syncIntervalMs: 1000, now: () => clock },
  );
  const tell = (n: number): Promise<void> => (told.push(n), Promise.resolve());
  return { disk, path, log, logs, touched, told, tell, release: () => release?.(), syncs: () => syncs, tick: (ms: number) => (clock += ms) };
}

test("secondary disk logs: DISK_LOG reports the log there is; the replica log once the image is synced; one sync per interval", async (t) => {
  const s = setup(t);
  assert.deepEqual(s.logs.report().disks.map((d) => d.flags), [0], "no log: flags 0, all zero");
  s.log.replace({ lineage: new Uint8Array(16).fill(3), kind: "primary", seq: 4, size: 16 * MiB, chunkSize: MiB }, [2, 9], false);
  const e = s.logs.report().disks[0];
  assert.deepEqual({ flags: e?.flags, kind: e?.kind, seq: e?.seq, chunks: e?.chunks }, { flags: 1, kind: 1, seq: 4, chunks: [2, 9] });
  s.logs.forget(0);
  assert.equal(readLog(s.path), undefined, "deleted before the image's first write");

  s.logs.afterCheckpoint(0, s.tell);
  s.logs.afterCheckpoint(0, s.tell);
  assert.equal(s.syncs(), 1, "one sync at a time");
  assert.equal(readLog(s.path), undefined, "no replica log before the image is synced");
  s.release();
  await s.logs.syncInFlight;
  assert.deepEqual(s.told, [0], "DISK_SYNCED 0 once the sync completed");
  const replica = readLog(s.path);
  assert.equal(replica?.header.kind, "replica");
  assert.deepEqual(replica?.header.lineage, s.logs.lineage);
  assert.deepEqual(replica?.chunks, []);
  s.tick(500);
  s.logs.afterCheckpoint(1, s.tell);
  assert.equal(s.syncs(), 1, "within the interval: no sync");
  s.tick(600);
  s.logs.afterCheckpoint(2, s.tell);
  s.release();
  await s.logs.syncInFlight;
  assert.deepEqual(s.told, [0, 2]);
});

test("secondary disk logs: a takeover's survivor log names the overlay and the chunks no completed sync covers", async (t) => {
  const s = setup(t);
  s.touched.push(new Set([0, 1]), new Set([4]), new Set([6]));
  s.logs.afterCheckpoint(0, s.tell); // covers {0, 1}
  s.release();
  await s.logs.syncInFlight;
  s.tick(2000);
  s.logs.afterCheckpoint(3, s.tell); // covers {4}: still in flight at the takeover
  s.logs.takeOver(3, new Map([[0, [9]]])); // {6} written since
  const survivor = readLog(s.path);
  assert.equal(survivor?.header.kind, "survivor");
  assert.equal(survivor?.header.seq, 3);
  assert.deepEqual(survivor?.chunks, [4, 6, 9], "the overlay, the chunks of the sync in flight, those written since; not those synced");
  s.release();
  await s.logs.syncInFlight;
  assert.deepEqual(s.told, [0], "the sync in flight at the takeover tells nothing");
  assert.equal(readLog(s.path)?.header.kind, "survivor", "and writes no replica log over the survivor's");
  s.disk.write(12 * MiB, new Uint8Array(1));
  assert.deepEqual(readLog(s.path)?.chunks, [4, 6, 9, 12], "the survivor marks every later write");
});
