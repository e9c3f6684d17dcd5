/**
 * NbdServer against QEMU's own NBD client (qemu-io, qemu-img, qemu-nbd from
 * Debian's qemu-utils; no guest runs): every byte QEMU reads or writes must
 * come from / land in our BlockBackend, and FLUSH / FUA must reach flush().
 * Protocol corner cases with a hand-written client are in nbd-session.test.ts.
 */
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { lstatSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { NbdError, NbdServer, type NbdServerOptions } from "./nbd-server.js";
import { RawNbdClient, RecordingDisk } from "./nbd-test-client.js";

const KiB = 1024;
const MiB = 1024 * KiB;

/** qemu-utils present? Under CI=true a missing tool fails instead of skipping. */
function qemuSkipReason(): string | false {
  if (/^(true|1)$/i.test(process.env.CI ?? "")) return false;
  const r = spawnSync("qemu-io", ["--version"], { stdio: "ignore" });
  return r.status === 0 ? false : "needs qemu-io/qemu-img/qemu-nbd (Debian qemu-utils)";
}
const skip = qemuSkipReason();

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a QEMU tool asynchronously (the server lives on this event loop: never spawnSync here). */
function run(cmd: string, args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 20_000, maxBuffer: 4 * MiB }, (err, stdout, stderr) => {
      if (err !== null && typeof err.code !== "number") return reject(err);
      resolve({ code: err === null ? 0 : Number(err.code), stdout, stderr });
    });
  });
}

/** qemu-io with writeback caching (a plain write carries no FUA), one or more commands. */
async function qemuIo(uri: string, ...commands: string[]): Promise<Run> {
  return run("qemu-io", ["-f", "raw", "-t", "writeback", ...commands.flatMap((c) => ["-c", c]), uri]);
}

function filled(length: number, byte: number): Uint8Array {
  return new Uint8Array(length).fill(byte);
}

describe("NbdServer with QEMU's NBD client", { skip }, () => {
  let dir: string;
  const servers: NbdServer[] = [];

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "colo-nbd-"));
  });
  after(async () => {
    for (const s of servers) await s.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function serve(disk: RecordingDisk, opts: Partial<NbdServerOptions> = {}): Promise<NbdServer> {
    const s = await NbdServer.listen({ socketPath: join(dir, `s${servers.length}.sock`), backend: disk, ...opts });
    servers.push(s);
    return s;
  }

  test("qemu-io write, read, flush, FUA write: bytes and flushes land in the backend", async () => {
    const disk = new RecordingDisk(4 * MiB);
    const srv = await serve(disk);

    let r = await qemuIo(srv.uri, "write -P 0xab 0 64k");
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(disk.bytes.subarray(0, 64 * KiB), filled(64 * KiB, 0xab));
    assert.deepEqual(disk.bytes.subarray(64 * KiB, 128 * KiB), filled(64 * KiB, 0));
    assert.equal(disk.calls[0], "write 0 65536");
    assert.equal(srv.stats.fuaWrites, 0, "a writeback write carries no FUA");

    disk.calls.length = 0;
    r = await qemuIo(srv.uri, "read -P 0xab 0 64k");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /read 65536\/65536 bytes at offset 0/);
    assert.equal(disk.calls[0], "read 0 65536");

    disk.calls.length = 0;
    const flushesBefore = srv.stats.flushes;
    r = await qemuIo(srv.uri, "flush");
    assert.equal(r.code, 0, r.stderr);
    assert.ok(srv.stats.flushes >= flushesBefore + 1, "NBD_CMD_FLUSH served");
    assert.equal(disk.calls[0], "flush", "FLUSH reached backend.flush()");

    disk.calls.length = 0;
    r = await qemuIo(srv.uri, "write -f -P 0xcd 64k 4k");
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(disk.bytes.subarray(64 * KiB, 68 * KiB), filled(4 * KiB, 0xcd));
    assert.equal(srv.stats.fuaWrites, 1, "qemu-io write -f is an NBD FUA write");
    assert.deepEqual(disk.calls.slice(0, 2), ["write 65536 4096", "flush"], "the FUA write is flushed before its reply");
    assert.equal(srv.stats.errors, 0);
  });

  test("the end of the disk: the last sector reads and writes; a read past it never reaches the backend", async () => {
    const size = 1 * MiB;
    const disk = new RecordingDisk(size);
    const srv = await serve(disk);
    let r = await qemuIo(srv.uri, `write -P 0x5a ${size - 4 * KiB} 4k`, `read -P 0x5a ${size - 4 * KiB} 4k`, `read -P 0 ${size - 8 * KiB} 4k`);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.deepEqual(disk.bytes.subarray(size - 4 * KiB), filled(4 * KiB, 0x5a));
    disk.calls.length = 0;
    r = await qemuIo(srv.uri, `read ${size - 4 * KiB} 8k`);
    assert.match(r.stdout + r.stderr, /read failed/, "QEMU refuses a read past the end locally");
    assert.ok(!disk.calls.some((c) => c.startsWith("read")), `no backend read: ${disk.calls.join(", ")}`);
    // Past the end on the wire, from our own client: an error reply, no crash.
    const c = await RawNbdClient.connect(srv.socketPath);
    await c.open();
    const reply = await c.request({ type: 0, offset: size - 4 * KiB, length: 8 * KiB, cookie: 9n });
    assert.equal(reply.error, 22);
    assert.equal(reply.cookie, 9n);
    c.destroy();
  });

  test("qemu-io write -z (WRITE_ZEROES) zeroes through backend.write; discard (TRIM) is accepted and changes nothing", async () => {
    const disk = new RecordingDisk(2 * MiB);
    disk.bytes.fill(0xee);
    const srv = await serve(disk);
    const r = await qemuIo(srv.uri, "write -z 1M 128k", "discard 0 64k");
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.deepEqual(disk.bytes.subarray(MiB, MiB + 128 * KiB), filled(128 * KiB, 0));
    assert.deepEqual(disk.bytes.subarray(MiB - 512, MiB), filled(512, 0xee));
    assert.deepEqual(disk.bytes.subarray(0, 64 * KiB), filled(64 * KiB, 0xee), "TRIM is a no-op (doc/proto.md: MAY discard)");
    assert.equal(srv.stats.zeroWrites, 1);
    assert.equal(srv.stats.bytesZeroed, 128 * KiB);
    assert.equal(srv.stats.trims, 1);
  });

  test("qemu-img info sees the size; qemu-img convert copies the export byte for byte (throughput reported)", async (t) => {
    const size = 16 * MiB;
    const disk = new RecordingDisk(size);
    randomFillSync(disk.bytes);
    const srv = await serve(disk);
    const info = await run("qemu-img", ["info", "--output=json", srv.uri]);
    assert.equal(info.code, 0, info.stderr);
    assert.equal((JSON.parse(info.stdout) as { "virtual-size": number })["virtual-size"], size);

    const out = join(dir, "copy.img");
    let t0 = performance.now();
    const conv = await run("qemu-img", ["convert", "-f", "raw", "-O", "raw", srv.uri, out]);
    const readMs = performance.now() - t0;
    assert.equal(conv.code, 0, conv.stderr);
    assert.ok(Buffer.from(disk.bytes).equals(readFileSync(out)), "the copy equals the backend");

    // And back in: a file written into the export through qemu-img.
    const src = join(dir, "src.img");
    const data = Buffer.alloc(size);
    randomFillSync(data);
    writeFileSync(src, data);
    t0 = performance.now();
    const back = await run("qemu-img", ["convert", "-n", "-f", "raw", "-O", "raw", src, srv.uri]);
    const writeMs = performance.now() - t0;
    assert.equal(back.code, 0, back.stderr);
    assert.ok(data.equals(Buffer.from(disk.bytes)), "the backend equals the file written into it");
    const mib = size / MiB;
    t.diagnostic(`qemu-img convert ${mib} MiB: export -> file ${(mib / (readMs / 1000)).toFixed(0)} MiB/s, file -> export ${(mib / (writeMs / 1000)).toFixed(0)} MiB/s`);
  });

  test("qemu-nbd --list sees the one export and its block sizes (NBD_OPT_LIST, NBD_OPT_INFO)", async () => {
    const srv = await serve(new RecordingDisk(1 * MiB), { exportName: "vda" });
    const r = await run("qemu-nbd", ["--list", "-k", srv.socketPath]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /exports available: 1/);
    assert.match(r.stdout, /export: 'vda'/);
    assert.match(r.stdout, /size:\s+1048576/);
    assert.match(r.stdout, /min block: 512/);
    assert.match(r.stdout, /opt block: 4096/);
    assert.match(r.stdout, /max block: 33554432/);
  });

  test("a read-only export: QEMU opens it read-only and reads; writes are refused", async () => {
    const disk = new RecordingDisk(1 * MiB);
    disk.bytes.fill(0x11, 0, 4096);
    const srv = await serve(disk, { readOnly: true });
    const r = await run("qemu-io", ["-r", "-f", "raw", "-c", "read -P 0x11 0 4k", srv.uri]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const w = await run("qemu-io", ["-f", "raw", "-c", "write 0 4k", srv.uri]);
    assert.notEqual(w.code, 0, "QEMU will not open a read-only export read-write");
    assert.ok(!disk.calls.some((c) => c.startsWith("write")));
  });

  test("random bytes from a peer: that connection is dropped and logged, the next client is served", async () => {
    const disk = new RecordingDisk(1 * MiB);
    const warnings: string[] = [];
    const srv = await serve(disk, { log: { info: () => undefined, warn: (_f, m) => warnings.push(m) } });
    const junk = await RawNbdClient.connect(srv.socketPath);
    const bytes = Buffer.alloc(4096);
    randomFillSync(bytes);
    bytes.writeUInt32BE(0xfffffff0, 0); // client flags with unknown bits, whatever the rest holds
    junk.write(bytes);
    await junk.closed;
    assert.equal(srv.stats.droppedConnections, 1);
    assert.match(warnings.join("\n"), /client 1 dropped: client flags 0xfffffff0/);
    assert.match(warnings[0] ?? "", new RegExp(srv.socketPath.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")));
    const r = await qemuIo(srv.uri, "write -P 0x77 0 4k", "read -P 0x77 0 4k");
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.deepEqual(disk.bytes.subarray(0, 4096), filled(4096, 0x77));
  });
});

describe("NbdServer.listen", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "colo-nbd-listen-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("refuses a backend size that is not a multiple of the minimum block size, and bad block sizes", async () => {
    const path = join(dir, "bad.sock");
    await assert.rejects(NbdServer.listen({ socketPath: path, backend: new RecordingDisk(1000) }), (e: unknown) => e instanceof NbdError && e.code === "BAD_OPTIONS");
    await assert.rejects(NbdServer.listen({ socketPath: path, backend: new RecordingDisk(4096), minBlockSize: 3 }), /minimum block size 3/);
    await assert.rejects(NbdServer.listen({ socketPath: path, backend: new RecordingDisk(4096), maxPayload: 2 ** 30 }), /maximum payload/);
  });

  test("replaces a stale socket file, refuses one a live server answers on, cleans up on close", async () => {
    const path = join(dir, "x.sock");
    const first = await NbdServer.listen({ socketPath: path, backend: new RecordingDisk(4096) });
    await assert.rejects(NbdServer.listen({ socketPath: path, backend: new RecordingDisk(4096) }), (e: unknown) => e instanceof NbdError && e.code === "IN_USE");
    await first.close();
    await first.close(); // idempotent
    writeFileSync(path, "not a socket");
    await assert.rejects(NbdServer.listen({ socketPath: path, backend: new RecordingDisk(4096) }), /is not a socket/);
    rmSync(path);
    // A socket file left by a server that is gone: listen on another name, move it to `path`, close.
    const stale = createServer();
    await new Promise<void>((resolve) => stale.listen(join(dir, "tmp.sock"), resolve));
    renameSync(join(dir, "tmp.sock"), path);
    await new Promise<void>((resolve) => stale.close(() => resolve()));
    assert.ok(lstatSync(path).isSocket());
    const second = await NbdServer.listen({ socketPath: path, backend: new RecordingDisk(4096) });
    assert.equal(second.uri, `nbd+unix:///disk?socket=${encodeURIComponent(path)}`);
    assert.deepEqual(second.blockdevOptions, { driver: "nbd", server: { type: "unix", path }, export: "disk" });
    assert.equal(lstatSync(path).mode & 0o777, 0o600, "only the owner may connect");
    await second.close();
    assert.throws(() => lstatSync(path), /ENOENT/);
  });
});
