import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { DiskReplicationError } from "./errors.js";
import { chunkRange, chunksToCopy, differingChunks, hashBackend, hashBackendSync, hashFile } from "./image-hash.js";
import { makeSpillDir, MemoryDisk, Prng } from "./testing.js";

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

test("image hash: whole-image and per-chunk SHA-256, last chunk short", async () => {
  const bytes = new Prng(7).bytes(10 * 1024 + 512);
  const disk = new MemoryDisk(bytes);
  const h = await hashBackend(disk, { chunkBytes: 4096 });
  assert.equal(h.byteLength, bytes.length);
  assert.equal(h.chunkBytes, 4096);
  assert.equal(h.sha256, sha256(bytes));
  assert.deepEqual(h.chunks, [sha256(bytes.subarray(0, 4096)), sha256(bytes.subarray(4096, 8192)), sha256(bytes.subarray(8192))]);
  assert.deepEqual(hashBackendSync(disk, { chunkBytes: 4096 }), h);
  assert.equal((await hashBackend(disk)).chunks.length, 1, "default 1 MiB chunks");
});

test("image hash: a file hashes like the same bytes on a device", async (t) => {
  const dir = makeSpillDir();
  t.after(() => dir.remove());
  const bytes = new Prng(8).bytes(3 * 65536 + 100);
  const path = join(dir.dir, "disk.img");
  writeFileSync(path, bytes);
  assert.deepEqual(await hashFile(path, { chunkBytes: 65536 }), hashBackendSync(new MemoryDisk(bytes), { chunkBytes: 65536 }));
  await assert.rejects(hashFile(join(dir.dir, "absent.img")), (e: unknown) => e instanceof DiskReplicationError && e.message.includes("absent.img"));
});

test("image hash: only the chunks that differ are listed for copying", () => {
  const rng = new Prng(9);
  const chunk = 1024;
  const primary = new MemoryDisk(rng.bytes(8 * chunk + 10));
  const secondary = new MemoryDisk(primary.bytes);
  assert.deepEqual(chunksToCopy(hashBackendSync(primary, { chunkBytes: chunk }), hashBackendSync(secondary, { chunkBytes: chunk })), []);
  secondary.bytes[3 * chunk + 5] ^= 1;
  secondary.bytes[8 * chunk + 9] ^= 1; // the short last chunk
  secondary.bytes.fill(0, 5 * chunk - 1, 5 * chunk + 1); // straddles chunks 4 and 5
  const p = hashBackendSync(primary, { chunkBytes: chunk });
  const s = hashBackendSync(secondary, { chunkBytes: chunk });
  assert.notEqual(p.sha256, s.sha256);
  const copy = chunksToCopy(p, s);
  assert.deepEqual(copy, [3, 4, 5, 8]);
  for (const index of copy) {
    const { offset, length } = chunkRange(index, chunk, primary.byteLength);
    secondary.write(offset, primary.read(offset, length));
  }
  assert.equal(hashBackendSync(secondary, { chunkBytes: chunk }).sha256, p.sha256);
});

test("image hash: differingChunks counts chunks present on one side only; mismatched images are refused", () => {
  assert.deepEqual(differingChunks(["a", "b", "c"], ["a", "x", "c", "d"]), [1, 3]);
  assert.deepEqual(differingChunks([], []), []);
  assert.deepEqual(chunkRange(2, 100, 250), { offset: 200, length: 50 });
  assert.throws(() => chunkRange(3, 100, 250), (e: unknown) => e instanceof DiskReplicationError && e.code === "RANGE");
  const a = hashBackendSync(new MemoryDisk(2048), { chunkBytes: 512 });
  assert.throws(() => chunksToCopy(a, hashBackendSync(new MemoryDisk(1024), { chunkBytes: 512 })), /sizes differ/);
  assert.throws(() => chunksToCopy(a, hashBackendSync(new MemoryDisk(2048), { chunkBytes: 1024 })), /chunk sizes differ/);
  assert.throws(() => hashBackendSync(new MemoryDisk(512), { chunkBytes: 0 }), (e: unknown) => e instanceof DiskReplicationError && e.code === "RANGE");
});
