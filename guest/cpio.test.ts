import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { CpioTree, HEADER_SIZE, NEWC_MAGIC, TRAILER_NAME, decodeCpio, encodeCpio } from "./cpio.js";
import { GuestBuildError } from "./errors.js";

const execFileAsync = promisify(execFile);

/** One entry as found by walking the raw bytes, trailer included. */
interface RawEntry {
  name: string;
  offset: number;
  mode: number;
  filesize: number;
  ino: number;
  dataOffset: number;
}

function walk(buf: Buffer): RawEntry[] {
  const out: RawEntry[] = [];
  let off = 0;
  for (;;) {
    assert.equal(buf.toString("latin1", off, off + 6), NEWC_MAGIC, `magic at ${off}`);
    const field = (i: number): number => parseInt(buf.toString("latin1", off + 6 + i * 8, off + 14 + i * 8), 16);
    const namesize = field(11);
    const filesize = field(6);
    const name = buf.toString("utf8", off + HEADER_SIZE, off + HEADER_SIZE + namesize - 1);
    const dataOffset = off + HEADER_SIZE + namesize + ((4 - ((HEADER_SIZE + namesize) % 4)) % 4);
    assert.equal(dataOffset % 4, 0, `data of ${name} aligned`);
    out.push({ name, offset: off, mode: field(1), filesize, ino: field(0), dataOffset });
    off = dataOffset + filesize + ((4 - (filesize % 4)) % 4);
    assert.equal(off % 4, 0, `next header after ${name} aligned`);
    if (name === TRAILER_NAME) break;
  }
  assert.equal(off, buf.length, "archive ends right after the trailer");
  return out;
}

function sampleTree(): CpioTree {
  const t = new CpioTree();
  t.addFile("/init", Buffer.from("#!/bin/sh\necho hi\n"), 0o755);
  t.addFile("bin/busybox", Buffer.from([1, 2, 3, 4, 5]), 0o755);
  t.addSymlink("/bin/sh", "busybox");
  t.addSymlink("/lib/ld-linux.so.2", "i386-linux-gnu/ld-linux.so.2");
  t.addFile("etc/empty", new Uint8Array(0));
  t.addDirectory("tmp", 0o1777);
  t.addCharDevice("dev/console", 5, 1);
  return t;
}

test("header layout, name and data padding, trailer", () => {
  const buf = sampleTree().encode();
  const raw = walk(buf);
  assert.equal(HEADER_SIZE, 110);
  assert.equal(raw.at(-1)?.name, TRAILER_NAME);
  for (const r of raw) {
    // check field ("check") is 0 for newc 070701
    const checkHex = buf.toString("latin1", r.offset + 6 + 12 * 8, r.offset + 6 + 13 * 8);
    assert.equal(checkHex, "00000000");
    // mtime is 0
    assert.equal(buf.toString("latin1", r.offset + 6 + 5 * 8, r.offset + 6 + 6 * 8), "00000000");
    // bytes between name NUL and data are zero
    const nameEnd: number = r.offset + HEADER_SIZE + Buffer.byteLength(r.name) + 1;
    for (let i: number = nameEnd; i < r.dataOffset; i++) assert.equal(buf[i], 0);
  }
  const busybox = raw.find((r) => r.name === "bin/busybox");
  assert.ok(busybox);
  assert.equal(busybox.filesize, 5);
  assert.equal(busybox.mode, 0o100755);
  // 5 data bytes padded with 3 zero bytes
  assert.deepEqual([...buf.subarray(busybox.dataOffset, busybox.dataOffset + 8)], [1, 2, 3, 4, 5, 0, 0, 0]);
});

test("parents come first, inode numbers count up, output is deterministic", () => {
  const a = sampleTree().encode();
  const b = sampleTree().encode();
  assert.ok(a.equals(b));
  const names = walk(a).map((r) => r.name);
  assert.deepEqual(names, [
    "bin",
    "bin/busybox",
    "bin/sh",
    "dev",
    "dev/console",
    "etc",
    "etc/empty",
    "init",
    "lib",
    "lib/ld-linux.so.2",
    "tmp",
    TRAILER_NAME,
  ]);
  const inos = walk(a).slice(0, -1).map((r) => r.ino);
  assert.deepEqual(inos, inos.map((_, i) => i + 1));
});

test("round trip: types, modes, symlink targets, device numbers", () => {
  const entries = decodeCpio(sampleTree().encode());
  const byPath = new Map(entries.map((e) => [e.path, e]));
  const sh = byPath.get("bin/sh");
  assert.ok(sh && sh.type === "symlink");
  assert.equal(sh.target, "busybox");
  const ld = byPath.get("lib/ld-linux.so.2");
  assert.ok(ld && ld.type === "symlink");
  assert.equal(ld.target, "i386-linux-gnu/ld-linux.so.2");
  const init = byPath.get("init");
  assert.ok(init && init.type === "file");
  assert.equal(init.mode, 0o755);
  assert.equal(Buffer.from(init.data).toString(), "#!/bin/sh\necho hi\n");
  const tmp = byPath.get("tmp");
  assert.ok(tmp && tmp.type === "directory");
  assert.equal(tmp.mode, 0o1777);
  assert.equal(tmp.nlink, 2);
  const lib = byPath.get("lib");
  assert.ok(lib && lib.type === "directory");
  assert.equal(lib.mode, 0o755);
  const cons = byPath.get("dev/console");
  assert.ok(cons && cons.type === "chardev");
  assert.equal(cons.major, 5);
  assert.equal(cons.minor, 1);
  const empty = byPath.get("etc/empty");
  assert.ok(empty && empty.type === "file");
  assert.equal(empty.data.length, 0);
  for (const e of entries) {
    assert.equal(e.mtime, 0);
    assert.equal(e.uid, 0);
    assert.equal(e.gid, 0);
  }
});

test("every name length pads correctly", () => {
  for (let len = 1; len <= 9; len++) {
    for (let size = 0; size <= 5; size++) {
      const name = "x".repeat(len);
      const buf = encodeCpio([{ type: "file", path: name, mode: 0o644, data: new Uint8Array(size).fill(7) }]);
      const [entry] = decodeCpio(buf);
      assert.ok(entry && entry.type === "file");
      assert.equal(entry.path, name);
      assert.equal(entry.data.length, size);
      assert.equal(buf.length % 4, 0);
    }
  }
});

test("rejects duplicates, bad paths, files used as directories", () => {
  const t = new CpioTree();
  t.addFile("a", new Uint8Array(1));
  assert.throws(() => t.addFile("/a", new Uint8Array(1)), GuestBuildError);
  assert.throws(() => t.addFile("a/b", new Uint8Array(1)), /is a file/);
  assert.throws(() => t.addFile("../x", new Uint8Array(1)), /invalid path/);
  assert.throws(() => t.addFile("/", new Uint8Array(1)), /empty path/);
  t.addDirectory("d");
  t.addDirectory("d", 0o700); // redeclaring a directory is allowed
  assert.throws(() => encodeCpio([{ type: "directory", path: "x", mode: 0o755 }, { type: "directory", path: "/x", mode: 0o755 }]), /duplicate/);
});

test("reader rejects corrupt archives", () => {
  const good = sampleTree().encode();
  const badMagic = Buffer.from(good);
  badMagic.write("070707", 0, "latin1");
  assert.throws(() => decodeCpio(badMagic), /bad magic/);
  assert.throws(() => decodeCpio(good.subarray(0, good.length - 8)), /truncated|past the end/);
  const badHex = Buffer.from(good);
  badHex.write("zz", 10, "latin1");
  assert.throws(() => decodeCpio(badHex), /bad hex/);
});

test("GNU cpio lists the archive the same way (only when cpio is installed)", async (t) => {
  try {
    await execFileAsync("cpio", ["--version"]);
  } catch {
    t.skip("cpio is not installed");
    return;
  }
  const dir = await mkdtemp(join(tmpdir(), "colo-cpio-test-"));
  try {
    const file = join(dir, "a.cpio");
    await writeFile(file, sampleTree().encode());
    const { stdout } = await execFileAsync("sh", ["-c", 'cpio -it --quiet < "$1"', "sh", file]);
    assert.deepEqual(
      stdout.trim().split("\n"),
      walk(sampleTree().encode()).slice(0, -1).map((r) => r.name),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
