import { test } from "node:test";
import assert from "node:assert/strict";
import { DiskReplicationError } from "./errors.js";
import { PrimaryDisk } from "./primary-disk.js";
import { MemoryDisk } from "./testing.js";

const fill = (n: number, len: number) => new Uint8Array(len).fill(n);

interface Forwarded {
  seq: number;
  offset: number;
  data: Uint8Array;
}

test("primary disk: every write lands locally and is forwarded with seqs 1, 2, ...", () => {
  const local = new MemoryDisk(4096);
  const sent: Forwarded[] = [];
  const disk = new PrimaryDisk(local, { forward: (seq, offset, data) => sent.push({ seq, offset, data }) });
  assert.equal(disk.byteLength, 4096);
  assert.equal(disk.lastSeq, 0);
  disk.write(0, fill(1, 512));
  disk.write(700, fill(2, 3));
  assert.deepEqual(sent.map((w) => [w.seq, w.offset, w.data.length]), [[1, 0, 512], [2, 700, 3]]);
  assert.equal(disk.lastSeq, 2);
  assert.deepEqual(local.bytes.slice(700, 703), fill(2, 3));
  assert.deepEqual(disk.read(0, 4), fill(1, 4));
  assert.deepEqual(disk.stats(), {
    forwarding: true,
    lastSeq: 2,
    reads: 1,
    bytesRead: 4,
    writes: 2,
    bytesWritten: 515,
    forwardedWrites: 2,
    forwardedBytes: 515,
    forwardErrors: 0,
  });
});

test("primary disk: forward gets a private copy (the emulator reuses its buffer)", () => {
  const sent: Forwarded[] = [];
  const disk = new PrimaryDisk(new MemoryDisk(1024), { forward: (seq, offset, data) => sent.push({ seq, offset, data }) });
  const buffer = fill(1, 512);
  disk.write(0, buffer);
  buffer.fill(2);
  disk.write(512, buffer);
  assert.deepEqual(sent[0]?.data, fill(1, 512));
  assert.deepEqual(sent[1]?.data, fill(2, 512));
});

test("primary disk: not forwarding until started; stop keeps lastSeq; a new session restarts at seq 1", () => {
  const local = new MemoryDisk(4096);
  const sent: Forwarded[] = [];
  const forward = (seq: number, offset: number, data: Uint8Array) => sent.push({ seq, offset, data });
  const disk = new PrimaryDisk(local);
  disk.write(0, fill(1, 10));
  assert.equal(disk.forwarding, false);
  assert.equal(disk.lastSeq, 0);
  disk.startForwarding(forward);
  assert.throws(() => disk.startForwarding(forward), (e: unknown) => e instanceof DiskReplicationError && e.code === "STATE");
  disk.write(0, fill(2, 10));
  disk.write(0, fill(3, 10));
  disk.stopForwarding();
  disk.write(0, fill(4, 10));
  assert.equal(disk.lastSeq, 2);
  assert.deepEqual(local.bytes.slice(0, 10), fill(4, 10), "local writes continue unprotected");
  disk.startForwarding(forward);
  disk.write(20, fill(5, 1));
  assert.deepEqual(sent.map((w) => w.seq), [1, 2, 1]);
  assert.equal(disk.stats().writes, 5);
  assert.equal(disk.stats().forwardedWrites, 3);
});

test("primary disk: a forward that throws stops forwarding; the guest's write still succeeds", () => {
  const local = new MemoryDisk(4096);
  const errors: unknown[] = [];
  let calls = 0;
  const disk = new PrimaryDisk(local, {
    forward: () => {
      calls++;
      throw new Error("connection reset");
    },
    onForwardError: (err) => errors.push(err),
  });
  disk.write(0, fill(1, 512));
  disk.write(512, fill(2, 512));
  assert.equal(calls, 1);
  assert.equal(errors.length, 1);
  assert.equal(disk.forwarding, false);
  assert.deepEqual(local.bytes.slice(0, 1024), Uint8Array.from([...fill(1, 512), ...fill(2, 512)]));
  assert.equal(disk.stats().forwardErrors, 1);
  assert.equal(disk.stats().forwardedWrites, 0);
});

test("primary disk: a write the local device rejects is not forwarded", () => {
  const sent: Forwarded[] = [];
  const disk = new PrimaryDisk(new MemoryDisk(1024), { forward: (seq, offset, data) => sent.push({ seq, offset, data }) });
  assert.throws(() => disk.write(1000, fill(1, 100)));
  assert.deepEqual(sent, []);
  assert.equal(disk.lastSeq, 0);
});
