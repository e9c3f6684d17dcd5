/**
 * The activity log file (docs/specs/activity-log.md): round trip, the
 * write-ahead order of log syncs and image writes, crash consistency (a
 * seeded property test), atomic replacement, and what a reader rejects.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { ActivityLog, decodeLog, encodeLog, logPathOf, readLog, removeLog, type LogHeader } from "./activity-log.js";
import { DiskReplicationError } from "./errors.js";
import { ImageLog } from "./image-log.js";
import { makeSpillDir, MemoryDisk, Prng } from "./testing.js";

const CHUNK = 4096;
const lineage = (n: number): Uint8Array => new Uint8Array(16).fill(n);
const header = (o: Partial<LogHeader> = {}): LogHeader => ({ lineage: lineage(5), kind: "primary", seq: 7, size: 20 * CHUNK + 100, chunkSize: CHUNK, ...o });

/** An image whose writes call a before-write hook first, as RawDiskBackend does; `events` records what happened in order. */
class WriteAheadImage extends MemoryDisk {
  beforeWrite: ((offset: number, length: number) => void) | undefined;
  readonly events: string[] = [];

  override write(offset: number, data: Uint8Array): void {
    this.beforeWrite?.(offset, data.length);
    super.write(offset, data);
    this.events.push(`data ${Math.floor(offset / CHUNK)}`);
  }
}

function tmp(t: { after(fn: () => void): void }): string {
  const dir = makeSpillDir();
  t.after(() => dir.remove());
  return dir.dir;
}

test("activity log: header and marked chunks round trip through the file", (t) => {
  const image = join(tmp(t), "disk.img");
  const log = ActivityLog.create(image, header(), [20, 0, 9]);
  t.after(() => log.close());
  assert.equal(logPathOf(image), `${image}.colo-al`);
  assert.deepEqual(readLog(image), { header: header(), chunks: [0, 9, 20] });
  assert.equal(log.mark(3 * CHUNK + 10, CHUNK), true, "chunks 3 and 4: one sync");
  assert.equal(log.mark(9 * CHUNK, 1), false, "already marked: no sync");
  assert.deepEqual(readLog(image)?.chunks, [0, 3, 4, 9, 20]);
  assert.equal(readFileSync(logPathOf(image)).length, 64 + 3, "64-octet header, one bit per chunk");
  log.replace(header({ lineage: lineage(6), kind: "survivor", seq: 12 }), [1]);
  assert.deepEqual(readLog(image), { header: header({ lineage: lineage(6), kind: "survivor", seq: 12 }), chunks: [1] });
  assert.equal(existsSync(`${logPathOf(image)}.tmp`), false, "the temporary file is renamed over the log");
  assert.equal(readLog(join(tmp(t), "none.img")), undefined, "no log: undefined");
  assert.equal(removeLog(image), true);
  assert.equal(removeLog(image), false);
  assert.equal(readLog(image), undefined);
});

test("activity log: write-ahead, a chunk's bit is durable before the write to it lands, once per chunk", (t) => {
  const path = join(tmp(t), "disk.img");
  const image = new WriteAheadImage(8 * CHUNK);
  const slot = new ImageLog(path, (hook) => (image.beforeWrite = hook), { onSynced: (what) => image.events.push(`sync ${what}`) });
  t.after(() => slot.close());
  image.write(0, new Uint8Array(10));
  slot.replace(header({ size: image.byteLength }), [], true);
  image.events.length = 0;
  image.write(CHUNK + 5, new Uint8Array(10));
  image.write(CHUNK + 100, new Uint8Array(10));
  image.write(3 * CHUNK - 1, new Uint8Array(2));
  assert.deepEqual(image.events, ["sync mark", "data 1", "data 1", "sync mark", "data 2"], "the first write to an unmarked chunk syncs the log first; a marked chunk costs nothing");
  assert.deepEqual(readLog(path)?.chunks, [1, 2, 3]);
  slot.replace(header({ size: image.byteLength, kind: "replica", seq: 0 }), [], false);
  image.events.length = 0;
  image.write(6 * CHUNK, new Uint8Array(1));
  assert.deepEqual(image.events, ["data 6"], "a log kept without marking: no hook");
  assert.deepEqual(readLog(path)?.chunks, []);
  slot.remove();
  assert.equal(readLog(path), undefined);
});

test("activity log: crash consistency, every chunk that differs from the last committed state is in the log (seeded)", (t) => {
  const dir = tmp(t);
  for (let seed = 1; seed <= 40; seed++) {
    const rng = new Prng(seed);
    const chunks = 1 + rng.int(24);
    const size = chunks * CHUNK - rng.int(CHUNK);
    const path = join(dir, `disk${seed}.img`);
    const image = new WriteAheadImage(size);
    let committed = Uint8Array.from(image.bytes);
    const slot = new ImageLog(path, (hook) => (image.beforeWrite = hook));
    slot.replace(header({ size, seq: 0 }), [], true);
    const killAt = rng.int(150);
    let seq = 0;
    for (let op = 0; op < 150; op++) {
      if (op === killAt) {
        // The process dies in the middle of a write: after its chunks were marked, before its data landed (or not at all).
        const offset = rng.int(size);
        const hook = image.beforeWrite;
        image.beforeWrite = (o, l) => {
          if (rng.chance(0.5)) hook?.(o, l);
          throw new Error("killed");
        };
        assert.throws(() => image.write(offset, rng.bytes(Math.min(1 + rng.int(3 * CHUNK), size - offset))), /killed/);
        break;
      }
      if (rng.chance(0.1)) {
        // A checkpoint both sides hold (durably): the log may be cleared down to what was written since.
        committed = Uint8Array.from(image.bytes);
        slot.replace(header({ size, seq: ++seq }), [], true);
        continue;
      }
      const offset = rng.int(size);
      image.write(offset, rng.bytes(Math.min(1 + rng.int(2 * CHUNK), size - offset)));
    }
    slot.close();
    const log = readLog(path);
    assert.ok(log, `seed ${seed}: a log is on disk`);
    const marked = new Set(log.chunks);
    for (let c = 0; c * CHUNK < size; c++) {
      const a = image.bytes.subarray(c * CHUNK, (c + 1) * CHUNK);
      const b = committed.subarray(c * CHUNK, (c + 1) * CHUNK);
      if (!Buffer.from(a).equals(Buffer.from(b))) assert.ok(marked.has(c), `seed ${seed}: chunk ${c} differs from checkpoint ${seq} but is not in the log`);
    }
    assert.equal(log.header.seq, seq, `seed ${seed}`);
  }
});

test("activity log: a reader rejects a corrupt, truncated or other-version file, naming the file and what is wrong", (t) => {
  const dir = tmp(t);
  const good = encodeLog(header(), [1, 20]);
  const withChecksum = (bytes: Uint8Array): Uint8Array => {
    const out = Uint8Array.from(bytes);
    out.set(createHash("sha256").update(out.subarray(0, 56)).digest().subarray(0, 8), 56);
    return out;
  };
  const patch = (at: number, value: number, fix = true): Uint8Array => {
    const out = Uint8Array.from(good);
    new DataView(out.buffer).setUint32(at, value, true);
    return fix ? withChecksum(out) : out;
  };
  const cases: [string, Uint8Array, RegExp][] = [
    ["short", good.subarray(0, 40), /40 octets: truncated inside the 64-octet header/],
    ["magic", withChecksum(Uint8Array.from(good).fill(0x41, 0, 1)), /not an activity log/],
    ["version", patch(8, 2), /version 2, this colo reads version 1/],
    ["checksum", patch(12, 2, false), /header checksum mismatch/],
    ["kind", patch(12, 9), /unknown kind 9/],
    ["chunk size", patch(48, 1000), /chunk size 1000 is not a power of two/],
    ["count", patch(52, 99), /chunk count 99, but 21 chunks/],
    ["bitmap", good.subarray(0, good.length - 1), /truncated \(the bitmap needs 67\)/],
    ["trailing", Uint8Array.from([...good, 0]), /1 after the bitmap/],
    ["past the end", Uint8Array.from(good).map((b, i) => (i === good.length - 1 ? b | 0x80 : b)), /a bit past the last chunk \(20\) is set/],
    ["replica bits", patch(12, 2), /a replica's log with 2 chunks marked/],
  ];
  for (const [name, bytes, message] of cases) {
    const image = join(dir, `${name.replace(/ /g, "-")}.img`);
    writeFileSync(logPathOf(image), bytes);
    assert.throws(
      () => readLog(image),
      (e: unknown) => e instanceof DiskReplicationError && e.code === "LOG" && e.message.includes(logPathOf(image)) && message.test(e.message),
      name,
    );
  }
  assert.deepEqual(decodeLog(good, "x"), { header: header(), chunks: [1, 20] });
  const slot = new ImageLog(join(dir, "checksum.img"), () => undefined);
  const read = slot.read();
  assert.ok(read.kind === "bad" && /checksum/.test(read.problem), "an unreadable log reads as bad, with the reason");
});

test("activity log: a crash between the temporary file and the rename leaves the old log, read as it was; the next replacement goes over the stray file", (t) => {
  const image = join(tmp(t), "disk.img");
  const log = ActivityLog.create(image, header(), [2]);
  t.after(() => log.close());
  writeFileSync(`${logPathOf(image)}.tmp`, encodeLog(header({ seq: 99 }), [1, 2, 3]).subarray(0, 70)); // half written
  assert.deepEqual(readLog(image), { header: header(), chunks: [2] }, "the stray temporary file is not the log");
  log.mark(5 * CHUNK, 1);
  log.replace(header({ seq: 8 }), [5]);
  assert.deepEqual(readLog(image), { header: header({ seq: 8 }), chunks: [5] });
  assert.equal(existsSync(`${logPathOf(image)}.tmp`), false);
});
