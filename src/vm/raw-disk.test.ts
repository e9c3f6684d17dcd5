import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync, readFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RawDiskBackend } from "./raw-disk.js";

test("raw disk: reads and writes land in the file; bounds checked; hooks see writes", () => {
  const dir = mkdtempSync(join(tmpdir(), "colo-disk-"));
  try {
    const path = join(dir, "d.img");
    writeFileSync(path, Buffer.alloc(4096));
    const d = RawDiskBackend.open(path, false);
    const hooked: [number, number][] = [];
    d.onWrite = (off, data) => hooked.push([off, data.length]);
    d.write(512, Buffer.from("hello"));
    assert.equal(Buffer.from(d.read(512, 5)).toString(), "hello");
    assert.equal(readFileSync(path).subarray(512, 517).toString(), "hello");
    assert.deepEqual(hooked, [[512, 5]]);
    assert.throws(() => d.read(4000, 200), /outside the 4096-byte image/);
    assert.throws(() => d.write(-1, Buffer.alloc(1)), /outside/);
    assert.equal(d.stats.writes, 1);
    d.close();
    assert.throws(() => d.read(0, 1), /closed/);

    const ro = RawDiskBackend.open(path, true);
    ro.write(0, Buffer.from("x"));
    assert.equal(ro.stats.rejectedWrites, 1);
    assert.equal(readFileSync(path)[0], 0);
    ro.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("raw disk: bad images are refused naming the path", () => {
  const dir = mkdtempSync(join(tmpdir(), "colo-disk-"));
  try {
    assert.throws(() => RawDiskBackend.open(join(dir, "missing.img"), false), /missing\.img.*ENOENT/);
    writeFileSync(join(dir, "odd.img"), Buffer.alloc(1000));
    assert.throws(() => RawDiskBackend.open(join(dir, "odd.img"), false), /odd\.img is 1000 bytes/);
    mkdirSync(join(dir, "dir.img"));
    assert.throws(() => RawDiskBackend.open(join(dir, "dir.img"), false), /dir\.img/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("flush: fdatasync of the image, counted; a DiskSlot sends it to the raw image or to the layer in front", async () => {
  const { DiskSlot } = await import("./disk-slot.js");
  const dir = mkdtempSync(join(tmpdir(), "colo-flush-"));
  try {
    const path = join(dir, "d.img");
    writeFileSync(path, Buffer.alloc(4096));
    const raw = RawDiskBackend.open(path, false);
    const slot = new DiskSlot(raw);
    slot.write(0, Buffer.from("abc"));
    slot.flush();
    assert.equal(raw.stats.flushes, 1);
    assert.equal(readFileSync(path).subarray(0, 3).toString(), "abc");
    let layerFlushes = 0;
    slot.interpose({ byteLength: 4096, read: (_o, l) => new Uint8Array(l), write: () => undefined, flush: () => void layerFlushes++ });
    slot.flush();
    assert.deepEqual([layerFlushes, raw.stats.flushes], [1, 1]);
    slot.interpose({ byteLength: 4096, read: (_o, l) => new Uint8Array(l), write: () => undefined });
    slot.flush(); // a layer without flush(): nothing to make durable
    assert.equal(raw.stats.flushes, 1);
    raw.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("raw disk: beforeWrite sees each write's range before it touches the file; a hook that throws fails the write untouched", async () => {
  const dir = mkdtempSync(join(tmpdir(), "colo-disk-"));
  try {
    const path = join(dir, "d.img");
    writeFileSync(path, Buffer.alloc(4096));
    const d = RawDiskBackend.open(path, false);
    const seen: string[] = [];
    d.beforeWrite = (off, len) => seen.push(`before ${off}+${len}: file holds ${readFileSync(path).subarray(off, off + len).toString("hex")}`);
    d.onWrite = (off) => seen.push(`after ${off}`);
    d.write(8, Buffer.from([0xab, 0xcd]));
    assert.deepEqual(seen, ["before 8+2: file holds 0000", "after 8"]);
    d.beforeWrite = () => {
      throw new Error("log failed");
    };
    assert.throws(() => d.write(100, Buffer.from([1])), /log failed/);
    assert.equal(readFileSync(path)[100], 0, "nothing landed");
    assert.equal(d.stats.writes, 1);
    d.beforeWrite = undefined;
    d.write(100, Buffer.from([1]));
    await d.flushAsync();
    assert.equal(readFileSync(path)[100], 1);
    d.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
