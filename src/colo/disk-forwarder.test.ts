/**
 * The primary's disk forwarding end to end over real streams (no VM): guest
 * writes before, during and after the initial sync and during the memory
 * part, chunks copied on DISK_WANT, DISK_CHECKPOINT; the records read back
 * and applied to a SecondaryDisk must leave the secondary's image equal to
 * the primary's as of the checkpoint.
 */
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { test } from "node:test";
import { PAGE_SIZE } from "../engine/engine.js";
import { readAll } from "../state/reader.js";
import { MemorySink } from "../state/sink.js";
import { emuMachine, emuState, seededRandom } from "../state/testing.js";
import { allPfns, writePages } from "../state/write-pages.js";
import { StreamWriter } from "../state/writer.js";
import { BackChannel } from "./back-channel.js";
import { chunksToCopy, hashBackend } from "./disk/image-hash.js";
import { SecondaryDisk } from "./disk/secondary-disk.js";
import { HookedDisk, makeSpillDir, MemoryDisk, Prng, randomRange } from "./disk/testing.js";
import { DiskForwarder, type ForwardedDisk, type SealedWrites } from "./disk-forwarder.js";
import { WriteLock } from "./heartbeat.js";
import type { StreamRecord } from "../state/records.js";

const MiB = 2 ** 20;
const PAGES = 4;

/** A primary disk as the daemon hands it to DiskForwarder: the image, and its write hook (RawDiskBackend.onWrite). */
class PrimaryImage implements ForwardedDisk {
  readonly local: HookedDisk;
  constructor(
    readonly index: number,
    image: Uint8Array,
  ) {
    this.local = new HookedDisk(image);
  }
  setWriteHook(hook: ((offset: number, data: Uint8Array) => void) | undefined): void {
    this.local.onWrite = hook;
  }
  guestWrite(offset: number, data: Uint8Array): void {
    this.local.write(offset, data);
  }
}

test("disk forwarding: initial sync, writes racing the copy and the memory part, checkpoint: the secondary ends equal", async () => {
  const random = seededRandom(7);
  const size = 6 * MiB;
  const base = new Uint8Array(size);
  for (let i = 0; i < size; i += 4096) base[i] = i / 4096;
  const primary = new PrimaryImage(0, base);
  // The secondary's copy is stale: two chunks differ.
  const stale = Uint8Array.from(base);
  stale[1 * MiB + 7] = 0xee;
  stale[4 * MiB + 9] = 0xee;
  const secondaryImage = new MemoryDisk(stale);
  const guestWrite = () => {
    const offset = Math.floor(random() * (size - 3000));
    const data = Uint8Array.from({ length: 1 + Math.floor(random() * 3000) }, () => Math.floor(random() * 256));
    primary.guestWrite(offset, data);
  };

  const sink = new MemorySink();
  const writer = new StreamWriter(sink, { machine: emuMachine(PAGES) });
  const backBytes = new PassThrough();
  const back = new BackChannel(backBytes, () => assert.fail("no frames expected"), () => assert.fail("no checkpoint requests expected"));
  const backWriter = new StreamWriter({ write: (c) => new Promise((r) => backBytes.write(c, () => r())) }, { machine: emuMachine(PAGES), channel: "back-channel" });
  let backlogRequests = 0;
  const fwd = new DiskForwarder([primary], writer, new WriteLock(), 16 * 1024, () => backlogRequests++);

  guestWrite(); // before replication: not forwarded (no hook yet)
  await writer.writeReplicationMode({ mode: "compare", disks: true });
  const sync = fwd.initialSync(back);
  // The secondary answers DISK_INFO with the chunks its image lacks; meanwhile the guest writes on.
  guestWrite();
  const mine = await hashBackend(secondaryImage);
  const theirs = await hashBackend(primary.local); // the primary hashed its image the same way
  await backWriter.writeDiskWant({ disk: 0, chunks: chunksToCopy(theirs, mine) });
  guestWrite();
  const result = await sync;
  assert.ok(result.chunksCopied >= 2 && result.chunksCopied < 6, `the differing chunks travel, not the whole image: ${result.chunksCopied}`);
  for (let i = 0; i < 20; i++) guestWrite();

  // The memory part: writes are held, then written before DISK_CHECKPOINT.
  await fwd.holdUntilCheckpoint();
  await writer.writeMemoryStream();
  guestWrite();
  await writePages(writer, new Uint8Array(PAGES * PAGE_SIZE), allPfns(PAGES));
  guestWrite();
  await writer.writeEngineState(emuState(new Uint8Array(3)));
  await writer.writeCheckpoint();
  await fwd.writeCheckpoint();
  await writer.writeCheckpointEnd();
  await writer.writeEnd();
  assert.ok(backlogRequests > 0, "more than 16 KiB forwarded asked for a checkpoint");

  // The secondary side: apply the records in stream order.
  const spill = makeSpillDir();
  const disk = new SecondaryDisk(secondaryImage, { spillDir: spill.dir });
  let checkpointSeq = -1;
  let announced = false;
  for (const r of await readAll(sink.bytes())) {
    if (r.kind === "disk-info") announced = true;
    // The secondary refuses a write for a disk no DISK_INFO announced (secondary-disks.ts): the write made while the image was hashed follows it.
    if (r.kind === "disk-write") assert.ok(announced, `DISK_WRITE seq ${r.write.seq} before the disk's DISK_INFO`);
    if (r.kind === "disk-write") {
      if (r.write.seq === 0) disk.syncWrite(r.write.offset, r.write.data);
      else disk.primaryWrite(r.write.seq, r.write.offset, r.write.data);
    } else if (r.kind === "disk-checkpoint") {
      checkpointSeq = r.checkpoint.uptoSeq;
      disk.checkpoint(r.checkpoint.uptoSeq);
    }
  }
  assert.equal(checkpointSeq, fwd.stats()[0]?.lastSeq, "DISK_CHECKPOINT covers every write made before it");
  assert.ok(Buffer.from(secondaryImage.bytes).equals(Buffer.from(primary.local.bytes)), "the secondary's image is the primary's as of the checkpoint");
  fwd.stop();
  disk.close();
  spill.remove();
});

/**
 * One randomized run of production's primary path: guest writes (from one
 * reused buffer, as v86 does) land on the image and reach a real
 * DiskForwarder through the write hook; checkpoints are written as the
 * primary writes them (checkpoint 0 closing the initial memory part, with
 * the writes held during it; then NEW ... CHECKPOINT, DISK_CHECKPOINT,
 * CHECKPOINT_END, the PVM writing between NEW and its pause (held) and
 * after its resume, before the checkpoint is written (the next epoch's)). The stream is read back and applied to a SecondaryDisk whose
 * SVM writes and reads in between: at every CHECKPOINT_END its base must be
 * the PVM's image as of that checkpoint, and the SVM must read its own
 * writes over it; a failover commits the SVM's view.
 */
async function forwardingRun(seed: number, spillDir: string): Promise<{ checkpoints: number; forwarded: number; heldInMemoryPart: number; failedOver: boolean }> {
  const rng = new Prng(seed);
  const size = 256 * 1024;
  const initial = rng.bytes(size);
  const pvm = new PrimaryImage(0, initial);
  const sink = new MemorySink();
  const writer = new StreamWriter(sink, { machine: emuMachine(PAGES) });
  const backBytes = new PassThrough();
  const back = new BackChannel(backBytes, () => assert.fail("no frames expected"), () => assert.fail("no checkpoint requests expected"));
  const backWriter = new StreamWriter({ write: (c) => new Promise((r) => backBytes.write(c, () => r())) }, { machine: emuMachine(PAGES), channel: "back-channel" });
  const lock = new WriteLock();
  const fwd = new DiskForwarder([pvm], writer, lock, 2 ** 40, () => undefined);
  const buffer = new Uint8Array(8192);
  let written = 0;
  const guestWrites = (n: number) => {
    for (let i = 0; i < n; i++) {
      const { offset, length } = randomRange(rng, size);
      const len = Math.min(length, buffer.length);
      buffer.set(rng.bytes(len));
      pvm.guestWrite(offset, buffer.subarray(0, len));
      written++;
    }
  };
  /** The PVM's image at each checkpoint's pause, in order. */
  const snapshots: Uint8Array[] = [];
  const memoryPart = async (first: boolean, sealed?: SealedWrites) => {
    await writer.writeMemoryStream();
    await writePages(writer, new Uint8Array(PAGES * PAGE_SIZE), first ? allPfns(PAGES) : [rng.int(PAGES)]);
    await writer.writeEngineState(emuState(new Uint8Array(3)));
    await writer.writeCheckpoint();
    await fwd.writeCheckpoint(sealed);
    await writer.writeCheckpointEnd();
  };

  await writer.writeReplicationMode({ mode: "compare", disks: true });
  const sync = fwd.initialSync(back);
  await backWriter.writeDiskWant({ disk: 0, chunks: [] }); // the images start equal
  await sync;
  guestWrites(rng.int(20));
  await fwd.holdUntilCheckpoint();
  const before = written;
  guestWrites(1 + rng.int(10)); // during the initial memory part: held, sent inside checkpoint 0
  const heldInMemoryPart = written - before;
  snapshots.push(Uint8Array.from(pvm.local.bytes));
  await lock.run(() => memoryPart(true));
  const checkpoints = 3 + rng.int(6);
  for (let k = 1; k < checkpoints; k++) {
    guestWrites(rng.int(40));
    await new Promise((r) => setImmediate(r)); // forwarded writes reach the stream while the guest runs
    guestWrites(rng.int(10)); // queued on the lock before the checkpoint: written before NEW
    // The checkpoint asks for the lock while it is busy (a record draining): writes in that gap are held too.
    let drained: () => void = () => undefined;
    const draining = new Promise<void>((resolve) => (drained = resolve));
    const busy = lock.run(() => draining);
    fwd.holdWrites();
    const turn = lock.run(async () => {
      await writer.writeCheckpointState("NEW");
      // NEW to the pause (the PVM runs while the secondary suspends): held, written inside this checkpoint.
      guestWrites(rng.int(10));
      // Pause: the image as of now is what this checkpoint covers.
      snapshots.push(Uint8Array.from(pvm.local.bytes));
      const sealed = fwd.seal();
      // Resumed before the checkpoint is written: the next epoch's, queued on the lock behind it.
      guestWrites(rng.int(5));
      await memoryPart(false, sealed);
    });
    guestWrites(1 + rng.int(5)); // the lock still busy: held for this checkpoint
    drained();
    await busy;
    await turn;
  }
  guestWrites(rng.int(10)); // after the last checkpoint: pending on the secondary, dropped at failover
  await lock.run(() => writer.writeEnd());
  fwd.stop();

  const svmBase = new MemoryDisk(initial);
  const svm = new SecondaryDisk(svmBase, { spillDir, memoryLimitBytes: seed % 2 === 0 ? 0 : 64 * MiB });
  let refSvm: Uint8Array | undefined;
  let upto: number | undefined;
  let applied = 0;
  const svmRuns = () => {
    if (refSvm === undefined) return; // the SVM runs from checkpoint 0 on
    for (let i = rng.int(3); i > 0; i--) {
      const { offset, length } = randomRange(rng, size);
      if (rng.chance(0.5)) {
        const data = rng.bytes(length);
        svm.write(offset, data);
        refSvm.set(data, offset);
      } else {
        assert.deepEqual(svm.read(offset, length), refSvm.slice(offset, offset + length), `seed ${seed}: the SVM reads its writes over the last checkpoint`);
      }
    }
  };
  const records: StreamRecord[] = await readAll(sink.bytes());
  for (const r of records) {
    svmRuns();
    if (r.kind === "disk-write") {
      if (r.write.seq === 0) svm.syncWrite(r.write.offset, r.write.data);
      else svm.primaryWrite(r.write.seq, r.write.offset, r.write.data);
    } else if (r.kind === "disk-checkpoint") {
      upto = r.checkpoint.uptoSeq;
    } else if (r.kind === "checkpoint-end") {
      assert.ok(upto !== undefined, "DISK_CHECKPOINT before CHECKPOINT_END");
      svm.checkpoint(upto);
      const expected = snapshots[applied];
      assert.ok(expected, `seed ${seed}: more checkpoints than the primary took`);
      assert.ok(Buffer.from(svmBase.bytes).equals(Buffer.from(expected)), `seed ${seed}, checkpoint ${applied}: the base is the PVM's image as of the checkpoint`);
      refSvm = Uint8Array.from(expected);
      applied++;
      upto = undefined;
    }
  }
  assert.equal(applied, checkpoints);
  assert.equal(svm.lastSeq, fwd.stats()[0]?.lastSeq, "every forwarded write arrived");
  const failedOver = rng.chance(0.5);
  if (failedOver && refSvm) {
    svm.failover();
    assert.ok(Buffer.from(svmBase.bytes).equals(Buffer.from(refSvm)), `seed ${seed}: failover commits the SVM's view`);
  }
  svm.close();
  return { checkpoints, forwarded: fwd.stats()[0]?.writes ?? 0, heldInMemoryPart, failedOver };
}

test("disk forwarding, randomized: production's write hook and forwarder, checkpoint after checkpoint, into a secondary disk", async () => {
  const spill = makeSpillDir();
  let checkpoints = 0;
  let forwarded = 0;
  let failovers = 0;
  try {
    for (let seed = 1; seed <= 12; seed++) {
      const run = await forwardingRun(seed, spill.dir);
      assert.ok(run.heldInMemoryPart > 0);
      checkpoints += run.checkpoints;
      forwarded += run.forwarded;
      if (run.failedOver) failovers++;
    }
  } finally {
    spill.remove();
  }
  assert.ok(checkpoints >= 40, `checkpoints: ${checkpoints}`);
  assert.ok(forwarded >= 1000, `writes forwarded: ${forwarded}`);
  assert.ok(failovers >= 2 && failovers <= 10, `some runs fail over: ${failovers}`);
});
