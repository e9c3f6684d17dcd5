/**
 * Re-protection by activity logs, end to end at the session seam (no VM):
 * a PrimaryReplicator and a SecondaryReplicator over in-memory images with
 * the raw image's write hooks (HookedDisk) and real log files in a tmp dir.
 * A session with disk writes and checkpoints; a takeover (or the
 * secondary's end); writes on the survivor; then a re-protection toward
 * the other image: the chunks copied are the logs' plan, a superset of a
 * brute-force diff of the two images and much smaller than the disk, and
 * the images are equal afterwards. And the fallbacks to the hash compare:
 * another lineage, --full-disk-sync, a secondary of revision 7.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { test, type TestContext } from "node:test";
import { StreamReader } from "../state/index.js";
import { readLog } from "./disk/activity-log.js";
import { DEFAULT_HASH_CHUNK_BYTES } from "./disk/image-hash.js";
import { ImageLog } from "./disk/image-log.js";
import { unionChunks } from "./disk/log-plan.js";
import { HookedDisk, makeSpillDir, Prng } from "./disk/testing.js";
import type { BlockBackend } from "../engine/engine.js";
import { PrimaryReplicator, type PrimaryOptions } from "./primary.js";
import { SecondaryReplicator } from "./secondary.js";
import { connection, fakeEngine, fakeSecondaryVm } from "./testing.js";

const MiB = DEFAULT_HASH_CHUNK_BYTES;
const CHUNKS = 32;
const DISK_LOG = 0x8000_010a;

/** An image (in memory) and its log (a real file beside a path in `dir`). */
interface Image {
  disk: HookedDisk;
  log: ImageLog;
  path: string;
}

function image(dir: string, name: string, bytes: Uint8Array): Image {
  const disk = new HookedDisk(bytes);
  const path = join(dir, `${name}.img`);
  return { disk, path, log: new ImageLog(path, (hook) => (disk.beforeWrite = hook)) };
}

interface Session {
  primary: PrimaryReplicator;
  secondary: SecondaryReplicator;
  run: Promise<string>;
  /** The secondary's replication layer in front of its image (the SVM writes through it). */
  layer(): BlockBackend;
  link: { primary: Duplex; secondary: Duplex };
  logs: string[];
}

/** The secondary writes no DISK_LOG (a revision-7 secondary): its first record is dropped on the way. */
function dropDiskLog(socket: Duplex): void {
  const write = socket.write.bind(socket) as (chunk: Uint8Array, cb?: (err?: Error | null) => void) => boolean;
  let pending = Buffer.alloc(0);
  let done = false;
  (socket as unknown as { write: (chunk: Uint8Array, cb?: (err?: Error | null) => void) => boolean }).write = (chunk, cb) => {
    if (done) return write(chunk, cb);
    pending = Buffer.concat([pending, Buffer.from(chunk)]);
    const total = pending.length >= 24 ? 24 + pending.readUInt32LE(20) + ((8 - (pending.readUInt32LE(20) % 8)) % 8) : Infinity;
    if (pending.length < total) {
      cb?.();
      return true;
    }
    done = true;
    return write(pending.readUInt32LE(16) === DISK_LOG ? Buffer.concat([pending.subarray(0, 16), pending.subarray(total)]) : pending, cb);
  };
}

/** A Remus session from `from` (the primary's image) to `to`, through checkpoint 0. */
async function session(t: TestContext, spillDir: string, from: Image, to: Image, opts: { primary?: Partial<PrimaryOptions>; revision7?: boolean } = {}): Promise<Session> {
  const pvm = fakeEngine();
  await pvm.start();
  const svm = fakeEngine();
  await svm.start({ paused: true });
  const link = connection();
  if (opts.revision7) dropDiskLog(link.secondary);
  const logs: string[] = [];
  const primary = new PrimaryReplicator(
    {
      engine: pvm,
      pause: () => pvm.pause(),
      resume: () => pvm.resume(),
      setOutputFilter: () => undefined,
      setInputFilter: () => undefined,
      sendOutput: () => undefined,
      disks: [{ index: 0, local: from.disk, setWriteHook: (h) => (from.disk.onWrite = h), log: from.log }],
      end: () => Promise.resolve(),
    },
    link.primary,
    "secondary",
    { mode: "remus", intervalMs: 60_000, timeoutMs: 30_000, heartbeatMs: 50, diskLogRewriteMs: 0, log: (m, f) => logs.push(`${m} ${JSON.stringify(f ?? {})}`), ...opts.primary },
  );
  let layer: BlockBackend | undefined;
  const vm = fakeSecondaryVm(svm, [{ index: 0, raw: to.disk, spillDir, interpose: (l) => (layer = l), log: to.log }]);
  const reader = new StreamReader(link.secondary);
  const secondary = new SecondaryReplicator(vm, link.secondary, reader, "primary", { timeoutMs: 30_000, heartbeatMs: 50, diskSyncIntervalMs: 0, log: (m, f) => logs.push(`secondary: ${m} ${JSON.stringify(f ?? {})}`) });
  t.after(async () => {
    link.secondary.destroy();
    link.primary.destroy();
    await primary.releaseLease();
    from.log.close();
    to.log.close();
  });
  const started = primary.start({ path: "/etc/colo/guest.cfg", text: 'name = "guest"\n' });
  const config = await reader.next();
  assert.equal(config?.kind, "vm-config");
  await secondary.receiveInitial();
  const run = secondary.run();
  await started;
  return {
    primary,
    secondary,
    run,
    layer: () => {
      if (!layer) throw new Error("no replication layer on the secondary's disk");
      return layer;
    },
    link,
    logs,
  };
}

/** Random writes of 1..8 KiB into `chunks` distinct 1 MiB chunks of `disk` (through `write`). */
function scribble(rng: Prng, write: (offset: number, data: Uint8Array) => void, chunks: number[]): void {
  for (const c of chunks) {
    const n = 1 + rng.int(3);
    for (let i = 0; i < n; i++) write(c * MiB + rng.int(MiB - 8192), rng.bytes(1024 * (1 + rng.int(8))));
  }
}

function pick(rng: Prng, n: number): number[] {
  const out = new Set<number>();
  while (out.size < n) out.add(rng.int(CHUNKS));
  return [...out];
}

/** The chunks where two images differ (brute force). */
function diff(a: Uint8Array, b: Uint8Array): number[] {
  const out: number[] = [];
  for (let c = 0; c < CHUNKS; c++) if (!Buffer.from(a.subarray(c * MiB, (c + 1) * MiB)).equals(Buffer.from(b.subarray(c * MiB, (c + 1) * MiB)))) out.push(c);
  return out;
}

async function until(what: string, cond: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A checkpoint, and the primary's log replaced after the secondary's DISK_SYNCED of it. */
async function checkpoint(s: Session, img: Image): Promise<number> {
  const done = await s.primary.checkpointNow(false);
  await until(`the primary's log at checkpoint ${done.checkpoint}`, () => {
    const r = img.log.read();
    return r.kind === "ok" && r.log.header.kind === "primary" && r.log.header.seq === done.checkpoint;
  });
  return done.checkpoint;
}

function both(t: TestContext, seed: number): { dir: string; a: Image; b: Image; rng: Prng } {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const rng = new Prng(seed);
  const bytes = rng.bytes(CHUNKS * MiB);
  return { dir: spill.dir, a: image(spill.dir, "a", bytes), b: image(spill.dir, "b", bytes), rng };
}

/** Session 1 from a to b with writes and checkpoints; the logs are in place. */
async function firstSession(t: TestContext, dir: string, a: Image, b: Image, rng: Prng): Promise<Session> {
  const s = await session(t, dir, a, b);
  assert.equal(s.primary.started?.disk.byLog, 0, "no logs yet: hash compare");
  for (let i = 0; i < 4; i++) {
    scribble(rng, (o, d) => a.disk.write(o, d), pick(rng, 3));
    await checkpoint(s, a);
  }
  assert.equal(readLog(b.path)?.header.kind, "replica");
  assert.deepEqual(readLog(b.path)?.header.lineage, readLog(a.path)?.header.lineage, "one lineage for both images of the session");
  return s;
}

test("re-protection: the survivor of a takeover and the old primary's image: only the chunks the logs name are copied", async (t) => {
  const { dir, a, b, rng } = both(t, 1);
  const s1 = await firstSession(t, dir, a, b, rng);
  // Writes the secondary never gets covered: the old primary dies with them on its image.
  scribble(rng, (o, d) => a.disk.write(o, d), pick(rng, 2));
  // The SVM wrote to its overlay since the last checkpoint (committed at the takeover).
  scribble(rng, (o, d) => s1.layer().write(o, d), pick(rng, 2));
  s1.link.primary.destroy(); // the primary's host died
  await s1.run;
  const survivor = readLog(b.path);
  assert.equal(survivor?.header.kind, "survivor");
  // The survivor runs on, and writes.
  scribble(rng, (o, d) => s1.layer().write(o, d), pick(rng, 3));
  const plan = unionChunks(readLog(a.path)?.chunks ?? [], readLog(b.path)?.chunks ?? []);
  const differs = diff(a.disk.bytes, b.disk.bytes);
  assert.ok(differs.length > 0);
  assert.ok(differs.every((c) => plan.includes(c)), `the plan ${plan} covers every differing chunk ${differs}`);
  assert.ok(plan.length <= CHUNKS / 2, `the plan (${plan.length} chunks) is much smaller than the disk (${CHUNKS})`);

  const s2 = await session(t, dir, b, a);
  assert.equal(s2.primary.started?.disk.byLog, 1, "the logs proved the chunks: no hashing");
  assert.equal(s2.primary.started?.disk.chunksCopied, plan.length, "exactly the plan's chunks were copied");
  assert.ok(s2.logs.some((l) => l.startsWith("disk sync by activity logs")), s2.logs.join("\n"));
  assert.deepEqual(diff(a.disk.bytes, b.disk.bytes), [], "the images are equal after the sync");
  // After the new session's first DISK_SYNCED the survivor's log is replaced by the new session's.
  await until("the new session's logs", () => readLog(b.path)?.header.kind === "primary" && readLog(a.path)?.header.kind === "replica");
  assert.deepEqual(readLog(a.path)?.header.lineage, readLog(b.path)?.header.lineage);
  assert.notDeepEqual(readLog(a.path)?.header.lineage, survivor?.header.lineage, "a new lineage");
  await s2.primary.stop("test over");
});

test("re-protection: the old primary whose secondary went away, toward the old secondary's image", async (t) => {
  const { dir, a, b, rng } = both(t, 2);
  const s1 = await firstSession(t, dir, a, b, rng);
  // Writes after the last checkpoint, then the session ends without a takeover; the primary runs on alone.
  scribble(rng, (o, d) => a.disk.write(o, d), pick(rng, 2));
  await s1.primary.stop("the secondary went away");
  await s1.run;
  scribble(rng, (o, d) => a.disk.write(o, d), pick(rng, 3));
  assert.equal(readLog(b.path)?.header.kind, "replica", "the discarded copy keeps its replica log");
  const plan = readLog(a.path)?.chunks ?? [];
  const differs = diff(a.disk.bytes, b.disk.bytes);
  assert.ok(differs.length > 0 && differs.every((c) => plan.includes(c)), `plan ${plan} ⊇ diff ${differs}`);
  assert.ok(plan.length <= CHUNKS / 2);

  const s2 = await session(t, dir, a, b);
  assert.equal(s2.primary.started?.disk.byLog, 1);
  assert.equal(s2.primary.started?.disk.chunksCopied, plan.length);
  assert.deepEqual(diff(a.disk.bytes, b.disk.bytes), []);
  await s2.primary.stop("test over");
});

test("re-protection: logs of another lineage, --full-disk-sync, a revision-7 secondary: the hash compare", async (t) => {
  const { dir, a, b, rng } = both(t, 3);
  const s1 = await firstSession(t, dir, a, b, rng);
  scribble(rng, (o, d) => a.disk.write(o, d), pick(rng, 2));
  await s1.primary.stop("the secondary went away");
  await s1.run;

  // --full-disk-sync: the logs would prove the plan, the operator wants the hash compare.
  const full = await session(t, dir, a, b, { primary: { fullDiskSync: true } });
  assert.equal(full.primary.started?.disk.byLog, 0);
  assert.ok(full.logs.some((l) => l.includes("a full disk sync was asked for")), full.logs.join("\n"));
  assert.deepEqual(diff(a.disk.bytes, b.disk.bytes), []);
  await full.primary.stop("next");
  await full.run;

  // Another lineage: b's log is of a session a was not part of.
  scribble(rng, (o, d) => a.disk.write(o, d), pick(rng, 2));
  const other = readLog(a.path);
  assert.ok(other);
  b.log.replace({ ...other.header, lineage: new Uint8Array(16).fill(9), kind: "replica", seq: 0 }, [], false);
  const mismatch = await session(t, dir, a, b);
  assert.equal(mismatch.primary.started?.disk.byLog, 0);
  assert.ok(mismatch.logs.some((l) => l.includes("different sessions (lineage)")), mismatch.logs.join("\n"));
  assert.deepEqual(diff(a.disk.bytes, b.disk.bytes), []);
  await mismatch.primary.stop("next");
  await mismatch.run;

  // A revision-7 secondary sends no DISK_LOG: the primary waits, hashes, and deletes its own log.
  scribble(rng, (o, d) => a.disk.write(o, d), pick(rng, 2));
  assert.ok(readLog(a.path));
  const old = await session(t, dir, a, b, { revision7: true, primary: { diskLogWaitMs: 200 } });
  assert.equal(old.primary.started?.disk.byLog, 0);
  assert.deepEqual(diff(a.disk.bytes, b.disk.bytes), []);
  assert.ok(old.logs.some((l) => l.includes("sent no disk log")), old.logs.join("\n"));
  assert.equal(a.log.read().kind, "none", "the primary's log is deleted: the old secondary changes its image without one");
  await old.primary.stop("test over");
});
