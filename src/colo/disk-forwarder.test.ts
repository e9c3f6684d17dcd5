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
import { makeSpillDir, MemoryDisk } from "./disk/testing.js";
import { DiskForwarder, type ForwardedDisk } from "./disk-forwarder.js";
import { WriteLock } from "./heartbeat.js";

const MiB = 2 ** 20;
const PAGES = 4;

/** A primary disk whose writes land locally, then go to the hook (as RawDiskBackend.onWrite does). */
class HookedDisk implements ForwardedDisk {
  private hook: ((offset: number, data: Uint8Array) => void) | undefined;
  constructor(
    readonly index: number,
    readonly local: MemoryDisk,
  ) {}
  setWriteHook(hook: ((offset: number, data: Uint8Array) => void) | undefined): void {
    this.hook = hook;
  }
  guestWrite(offset: number, data: Uint8Array): void {
    this.local.write(offset, data);
    this.hook?.(offset, data);
  }
}

test("disk forwarding: initial sync, writes racing the copy and the memory part, checkpoint: the secondary ends equal", async () => {
  const random = seededRandom(7);
  const size = 6 * MiB;
  const base = new Uint8Array(size);
  for (let i = 0; i < size; i += 4096) base[i] = i / 4096;
  const primary = new HookedDisk(0, new MemoryDisk(base));
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
  const back = new BackChannel(backBytes, () => assert.fail("no frames expected"));
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
  for (const r of await readAll(sink.bytes())) {
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
