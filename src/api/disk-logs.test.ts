/**
 * The daemon's activity logs: one ImageLog per raw image whose write-ahead
 * hook marks a real image's writes, a log that cannot be marked dropped
 * (the write goes on), and the logs of writable images deleted before a VM
 * runs without keeping them (boot, restore, a migration's destination).
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { readLog } from "../colo/disk/activity-log.js";
import { parseVmConfig } from "../config/index.js";
import { RawDiskBackend } from "../vm/raw-disk.js";
import { dropActivityLogs, imageLogOf } from "./disk-logs.js";
import { pino } from "pino";

const MiB = 2 ** 20;
const header = (size: number) => ({ lineage: new Uint8Array(16).fill(2), kind: "survivor" as const, seq: 3, size, chunkSize: MiB });

test("disk logs: one log per image, marking a real image's writes before they land; a log that cannot be marked is dropped, the write goes on", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "colo-al-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "d.img");
  writeFileSync(path, Buffer.alloc(4 * MiB));
  const raw = RawDiskBackend.open(path, false);
  t.after(() => raw.close());
  const logger = pino({ level: "silent" });
  const log = imageLogOf(raw, logger);
  assert.equal(imageLogOf(raw, logger), log, "the same log for the daemon's life");
  log.replace(header(raw.byteLength), [0], true);
  raw.write(2 * MiB + 10, new Uint8Array(4096));
  assert.deepEqual(readLog(path)?.chunks, [0, 2]);
  log.active?.close(); // the log's file can no longer be written
  raw.write(3 * MiB, new Uint8Array([7]));
  assert.equal(raw.read(3 * MiB, 1)[0], 7, "the write went on");
  assert.equal(readLog(path), undefined, "the log that could not be marked is gone");
  assert.equal(raw.beforeWrite, undefined, "and nothing marks any more");
});

test("disk logs: dropActivityLogs deletes the logs of the writable images only", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "colo-al-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  for (const n of ["rw.img", "ro.img"]) {
    writeFileSync(join(dir, n), Buffer.alloc(MiB));
    writeFileSync(join(dir, `${n}.colo-al`), "x");
  }
  const cfg = join(dir, "g.cfg");
  const config = parseVmConfig(`name = 'g'\nkernel = 'k'\ndisk = [ 'format=raw, vdev=hda, access=rw, target=rw.img', 'format=raw, vdev=hdb, access=ro, target=ro.img' ]\n`, cfg);
  dropActivityLogs(config, pino({ level: "silent" }));
  assert.equal(existsSync(join(dir, "rw.img.colo-al")), false);
  assert.equal(existsSync(join(dir, "ro.img.colo-al")), true, "a read-only image is never written: its log stays");
});
