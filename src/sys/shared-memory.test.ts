import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { mapSharedFile } from "./shared-memory.js";
import { SysError } from "./errors.js";

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "colo-shm-"));
}

test("a shared mapping: our writes reach the file, another process's writes reach us, no copy", (t) => {
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "ram");
  const m = mapSharedFile(path, 1 << 20, { create: true });
  assert.equal(statSync(path).size, 1 << 20);
  assert.equal(m.bytes.length, 1 << 20);
  m.bytes[4096 + 7] = 0xab;
  assert.equal(readFileSync(path)[4096 + 7], 0xab);
  // Another process writes the file (as QEMU writes guest RAM): we see it at once.
  const other = spawnSync("sh", ["-c", `printf '\\377' | dd of=${path} bs=1 seek=300 conv=notrunc 2>/dev/null`]);
  assert.equal(other.status, 0);
  assert.equal(m.bytes[300], 0xff);
  m.release();
  assert.equal(m.released, true);
  // A stale view reads zeros instead of crashing; the file keeps what was written.
  assert.equal(m.bytes[4096 + 7], 0);
  assert.equal(readFileSync(path)[4096 + 7], 0xab);
  m.release(); // idempotent
});

test("an existing file is resized to the mapping; errors name the call and the file", (t) => {
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "ram");
  writeFileSync(path, Buffer.alloc(10, 1));
  const m = mapSharedFile(path, 8192);
  assert.equal(statSync(path).size, 8192);
  assert.equal(m.bytes[9], 1);
  assert.equal(m.bytes[10], 0);
  m.release();
  assert.throws(() => mapSharedFile(join(dir, "missing"), 4096), (e: unknown) => e instanceof SysError && e.code === "ENOENT" && e.message.includes(join(dir, "missing")));
  assert.throws(() => mapSharedFile(path, 1000), /multiple of 4096/);
});

test("anonymous: the file is unlinked once mapped, another process opens it through /proc/<pid>/fd, release closes it", (t) => {
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "ram");
  const m = mapSharedFile(path, 8192, { create: true, anonymous: true });
  assert.equal(existsSync(path), false, "unlinked");
  assert.match(m.path, new RegExp(`^/proc/${process.pid}/fd/\\d+$`));
  m.bytes[5] = 7;
  // Another process (as QEMU does with mem-path) writes through the /proc path; we see it.
  const other = spawnSync("sh", ["-c", `printf '\\011' | dd of=${m.path} bs=1 seek=6 conv=notrunc 2>/dev/null`]);
  assert.equal(other.status, 0);
  assert.equal(m.bytes[6], 9);
  assert.equal(readFileSync(m.path)[5], 7);
  m.release();
  assert.equal(existsSync(m.path), false, "the descriptor is closed");
});
