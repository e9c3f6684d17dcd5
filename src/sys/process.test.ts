import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { addressOf } from "./libc.js";
import { descriptorsLinkedTo, mappingsOfFile, processEnded } from "./process.js";
import { mapSharedFile } from "./shared-memory.js";

test("process: mappingsOfFile finds where a process maps an unlinked file, by its /proc/<pid>/fd path, of that length only", () => {
  const dir = mkdtempSync(join(tmpdir(), "colo-maps-"));
  try {
    const m = mapSharedFile(join(dir, "ram"), 1 << 20, { create: true, anonymous: true });
    try {
      assert.match(m.path, /^\/proc\/\d+\/fd\/\d+$/);
      assert.deepEqual(mappingsOfFile(process.pid, m.path, 1 << 20), [addressOf(m.bytes)]);
      assert.deepEqual(mappingsOfFile(process.pid, m.path, 1 << 21), [], "another length: not this mapping");
    } finally {
      m.release();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("process: descriptorsLinkedTo lists a process's descriptors by what they are; processEnded of ourselves is false", () => {
  const dir = mkdtempSync(join(tmpdir(), "colo-fds-"));
  try {
    const m = mapSharedFile(join(dir, "ram"), 4096, { create: true, anonymous: true });
    try {
      const fd = Number(m.path.split("/").pop());
      assert.deepEqual(descriptorsLinkedTo(process.pid, `${join(dir, "ram")} (deleted)`), [fd]);
      assert.deepEqual(descriptorsLinkedTo(process.pid, "anon_inode:[nothing-such]"), []);
      assert.equal(processEnded(process.pid), false);
    } finally {
      m.release();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
