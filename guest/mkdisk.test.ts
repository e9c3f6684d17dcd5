import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GuestBuildError } from "./errors.js";
import { createDataDisk } from "./mkdisk.js";

/** ext4 superblock at byte 1024, s_magic (0xEF53, little-endian) at offset 56: linux/fs/ext4/ext4.h. */
const EXT4_SUPERBLOCK = 1024;
const EXT4_MAGIC_OFFSET = 56;
const EXT4_MAGIC = 0xef53;

test("creates a sparse ext4 image, refuses to overwrite unless asked", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "colo-mkdisk-test-"));
  try {
    const path = join(dir, "data.img");
    try {
      await createDataDisk(path, 16);
    } catch (e) {
      if (e instanceof GuestBuildError && e.code === "TOOL_MISSING") {
        t.skip("mkfs.ext4 is not installed");
        return;
      }
      throw e;
    }
    const st = await stat(path);
    assert.equal(st.size, 16 * 2 ** 20);
    assert.ok(st.blocks * 512 < st.size, "file is sparse");
    const bytes = await readFile(path);
    assert.equal(bytes.readUInt16LE(EXT4_SUPERBLOCK + EXT4_MAGIC_OFFSET), EXT4_MAGIC);

    await assert.rejects(createDataDisk(path, 16), (e: unknown) => e instanceof GuestBuildError && e.code === "DISK_EXISTS" && e.message.includes(path));
    await writeFile(path, "x");
    await writeFile(`${path}.colo-al`, "an old image's activity log");
    await createDataDisk(path, 8, { overwrite: true });
    assert.equal((await stat(path)).size, 8 * 2 ** 20);
    await assert.rejects(stat(`${path}.colo-al`), /ENOENT/, "a new image has no activity log");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("rejects bad sizes and names the path", async () => {
  await assert.rejects(createDataDisk("/nonexistent/x.img", 1), (e: unknown) => e instanceof GuestBuildError && e.code === "INVALID_OPTION" && e.message.includes("/nonexistent/x.img"));
  await assert.rejects(createDataDisk("/nonexistent/x.img", 16.5), /not an integer/);
  await assert.rejects(createDataDisk("/nonexistent-dir-colo/x.img", 16), (e: unknown) => e instanceof GuestBuildError && e.code === "DISK_FAILED" && e.message.includes("/nonexistent-dir-colo/x.img"));
});
