/**
 * `colo check`'s verdicts as pure functions: a healthy pair passes every
 * check, and each fact that would make the protection fail (or not
 * protect) turns exactly its check to FAIL (or warn), naming the figures
 * and what to do.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseVmConfig } from "../config/index.js";
import type { HostFacts } from "./check-protocol.js";
import type { CheckName, CheckResult } from "./check-result.js";
import { evaluateChecks, secondaryMemoryNeed } from "./check-rules-host.js";
import type { CheckFacts } from "./check-rules.js";
import type { VmFacts } from "./daemon-check.js";

const MIB = 2 ** 20;
const CFG = "/srv/colo/secondary.cfg";
const TEXT = [
  'name = "guest"',
  "memory = 256",
  'engine = "qemu"',
  'kernel = "/srv/guest/vmlinuz"',
  'ramdisk = "/srv/guest/initrd.img"',
  "disk = [ 'format=raw, vdev=hda, access=rw, target=/srv/h2/data.img' ]",
  "vif = [ 'bridge=colobr' ]",
  "",
].join("\n");

function vmFacts(): VmFacts {
  return {
    name: "guest",
    state: "running",
    role: "unprotected",
    engine: "qemu",
    compatibility: "qemu 7.2.22 pc",
    memoryMiB: 256,
    config: { path: "/srv/colo/guest.cfg", text: TEXT.replace("/srv/h2/", "/srv/h1/") },
    kernel: { path: "/srv/guest/vmlinuz", bytes: 8_000_000 },
    ramdisk: { path: "/srv/guest/initrd.img", bytes: 30_000_000 },
    disks: [{ index: 0, vdev: "hda", access: "rw", path: "/srv/h1/data.img", bytes: 64 * MIB, dev: "2049", ino: "100" }],
    bootId: "boot-1",
    leaseHolder: "colo-h1:4242",
    dirty: { windowMs: 1000, pages: 65536, sampledPages: 16384, dirtySampledPages: 250, dirtyPages: 1000, pagesPerSec: 1000, bytesPerSec: 1000 * 4096, exact: false, workMs: 40 },
  };
}

function hostFacts(): HostFacts {
  return {
    version: 1,
    host: "h2",
    netns: "colo-h2",
    bootId: "boot-1",
    receiver: { colo: true, arbiter: "10.77.0.1:8003", leaseMs: 1000 },
    config: { ok: true, name: "guest", engine: "qemu", memoryMiB: 256, disks: 1 },
    engine: { engineId: "qemu", descriptor: "qemu 7.2.22 pc", from: "/usr/bin/qemu-system-x86_64 --version" },
    memory: { availableBytes: 8 * 2 ** 30, totalBytes: 16 * 2 ** 30 },
    shm: { freeBytes: 4 * 2 ** 30 },
    files: [
      { role: "kernel", path: "/srv/guest/vmlinuz", exists: true, bytes: 8_000_000 },
      { role: "ramdisk", path: "/srv/guest/initrd.img", exists: true, bytes: 30_000_000 },
      { role: "disk", index: 0, path: "/srv/h2/data.img", exists: true, bytes: 64 * MIB, usable: true, dev: "2049", ino: "200" },
    ],
    spill: [{ disk: 0, dir: "/var/lib/colo/guest.disk0", checked: "/var/lib/colo", dev: "2049", freeBytes: 10 * 2 ** 30, tmpfs: false }],
    bridges: [{ name: "colobr", present: true }],
  };
}

function facts(change: { vm?: (v: VmFacts) => void; host?: (h: HostFacts) => void; text?: string; bandwidth?: number } = {}): CheckFacts {
  const vm = vmFacts();
  change.vm?.(vm);
  const host = hostFacts();
  change.host?.(host);
  const text = change.text ?? TEXT;
  return {
    key: { path: "/etc/colo/colo.key", bytes: 32, mode: 0o100600 },
    vm,
    secondary: { source: { path: CFG, text }, config: parseVmConfig(text, CFG), given: true },
    to: "10.77.1.2:8002",
    peer: {
      ok: true,
      probe: {
        peer: "10.77.1.2:8002",
        connectMs: 3.2,
        facts: host,
        rtt: { samples: 10, medianMs: 0.4, minMs: 0.3, maxMs: 0.9 },
        bandwidth: { bytes: 32 * MIB, ms: 300, bytesPerSec: change.bandwidth ?? 110_000_000, timeLimited: false },
      },
    },
    arbiter: { at: "10.77.0.1:8003", leaseMs: 1000, reach: { ok: true, rttMs: 0.5, leases: [] } },
  };
}

function verdict(f: CheckFacts, name: CheckName): CheckResult {
  const r = evaluateChecks(f).results.find((x) => x.name === name);
  assert.ok(r, `no ${name} check`);
  return r;
}

function expect(f: CheckFacts, name: CheckName, status: CheckResult["status"], detail: RegExp, fix?: RegExp): void {
  const { results } = evaluateChecks(f);
  const r = verdict(f, name);
  assert.equal(r.status, status, `${name}: ${r.detail}`);
  assert.match(r.detail, detail);
  if (fix) assert.match(r.fix ?? "", fix);
  // Only this check changed.
  for (const other of results) if (other.name !== name) assert.equal(other.status, "ok", `${other.name} also ${other.status}: ${other.detail}`);
}

test("rules: a healthy pair passes every check, in order", () => {
  const { results, skipped } = evaluateChecks(facts());
  assert.deepEqual(skipped, []);
  assert.deepEqual(
    results.map((r) => r.name),
    ["key", "vm", "config", "peer", "receiver", "engine", "memory", "disks", "files", "host-memory", "shm", "spill-space", "bridge", "bandwidth", "arbiter"],
  );
  for (const r of results) assert.equal(r.status, "ok", `${r.name}: ${r.detail}`);
  assert.match(verdict(facts(), "engine").detail, /^qemu 7\.2\.22 pc on both hosts/);
  assert.match(verdict(facts(), "bandwidth").detail, /^880 Mbit\/s \(32\.0 MiB in 300 ms, timed by the receiver\) vs the guest's dirty rate 1000 pages\/s \(32\.8 Mbit\/s; 1000 pages in 1000 ms, from 16384 of 65536 pages\): 26\.9x headroom$/);
});

test("rules: the engines and the machine are refused as the migration refuses them", () => {
  expect(facts({ host: (h) => (h.engine = { engineId: "qemu", descriptor: "qemu 8.0.0 pc", from: "x" }) }), "engine", "fail", /the source runs qemu 7\.2\.22 pc, this host qemu 8\.0\.0 pc: a device state from one cannot be loaded by the other/, /same qemu-system-x86/);
  expect(facts({ host: (h) => (h.engine = { engineId: "qemu", why: "qemu-system-x86_64 not found on PATH (/usr/bin)" }) }), "engine", "fail", /cannot start engine qemu: qemu-system-x86_64 not found/, /install Debian's qemu-system-x86/);
  expect(facts({ text: TEXT.replace("memory = 256", "memory = 512"), host: (h) => h.config.ok && (h.config.memoryMiB = 512) }), "memory", "fail", /the stream's machine has 256 MiB of memory, this VM 512 MiB/, /set memory = 256 in \/srv\/colo\/secondary\.cfg/);
});

test("rules: disks, each replicated one present on the secondary with the primary's size, and its own", () => {
  const disk = (h: HostFacts) => h.files.find((x) => x.role === "disk") as NonNullable<HostFacts["files"][number]>;
  expect(facts({ host: (h) => Object.assign(disk(h), { exists: false, bytes: undefined, error: "ENOENT" }) }), "disks", "fail", /disk 0 \(hda, rw, replicated\): \/srv\/h2\/data\.img is not on 10\.77\.1\.2:8002 \(h2, netns colo-h2\) \(ENOENT\)/, /colo disk-create \/srv\/h2\/data\.img --size 64/);
  expect(facts({ host: (h) => (disk(h).bytes = 32 * MIB) }), "disks", "fail", /disk 0: the primary's image is 67108864 bytes, the secondary's \/srv\/h2\/data\.img 33554432/, /truncate -s 67108864/);
  expect(facts({ host: (h) => Object.assign(disk(h), { usable: false, error: "cannot open disk image /srv/h2/data.img read-write: EACCES" }) }), "disks", "fail", /cannot use \/srv\/h2\/data\.img: cannot open disk image .*EACCES/);
  expect(facts({ host: (h) => (disk(h).ino = "100") }), "disks", "fail", /is the primary's own image \(one file on one machine\)/, /its own copy/);
  // The same inode on another machine (another boot id) is another file.
  expect(facts({ host: (h) => ((disk(h).ino = "100"), (h.bootId = "boot-2")) }), "disks", "ok", /disk 0 \(hda, rw, replicated\): 64\.0 MiB on both/);
  const ro = TEXT.replace("access=rw", "access=ro");
  expect(facts({ text: ro, host: (h) => (h.spill = []) }), "disks", "fail", /the primary replicates disk 0, which \/srv\/colo\/secondary\.cfg does not have as a writable disk/);
  const two = TEXT.replace("target=/srv/h2/data.img'", "target=/srv/h2/data.img', 'format=raw, vdev=hdb, access=ro, target=/srv/x.img'");
  expect(facts({ text: two }), "disks", "fail", /guest has 1 disk\(s\), \/srv\/colo\/secondary\.cfg 2/);
});

test("rules: the kernel and initrd the config names are on the secondary; another size is a warning", () => {
  expect(facts({ host: (h) => Object.assign(h.files[0] as object, { exists: false, bytes: undefined, error: "ENOENT" }) }), "files", "fail", /kernel \/srv\/guest\/vmlinuz is not on .* \(ENOENT\)/, /copy it there/);
  expect(facts({ host: (h) => Object.assign(h.files[1] as object, { bytes: 29_000_000 }) }), "files", "warn", /ramdisk \/srv\/guest\/initrd\.img on .* is 29000000 bytes, the primary's .* 30000000: a reboot after a failover would boot another ramdisk/);
});

test("rules: the receiver: --colo, the name free there; the config: the VM's name, parsed alike on both", () => {
  // A plain migrate-receive takes no --arbiter: this check is given none either (the arbiter check's cases are below).
  const plain = facts({ host: (h) => (h.receiver = { colo: false }) });
  delete plain.arbiter;
  expect(plain, "receiver", "fail", /waits for a live migration, not a replication session/, /--colo/);
  expect(facts({ host: (h) => (h.nameInUse = { pid: 777 }) }), "receiver", "fail", /a VM named guest already runs on .* \(daemon pid 777\)/);
  expect(facts({ text: TEXT.replace('"guest"', '"other"'), host: (h) => h.config.ok && (h.config.name = "other") }), "config", "fail", /names VM other, the VM is guest/);
  const bad = evaluateChecks(facts({ host: (h) => (h.config = { ok: false, error: "/srv/colo/secondary.cfg:7: vif: unknown key" }) }));
  const config = bad.results.find((r) => r.name === "config");
  assert.equal(config?.status, "fail");
  assert.match(config?.detail ?? "", /cannot use \/srv\/colo\/secondary\.cfg \(-C\): \/srv\/colo\/secondary\.cfg:7: vif: unknown key/);
  assert.deepEqual(bad.skipped, ["engine", "disks", "files", "host-memory", "spill-space"]);
});

test("rules: the VM itself: running and unprotected; paused is a warning", () => {
  expect(facts({ vm: (v) => ((v.role = "primary"), (v.peer = "10.77.1.9:8002")) }), "vm", "fail", /already protected by 10\.77\.1\.9:8002/);
  expect(facts({ vm: (v) => (v.state = "paused") }), "vm", "warn", /paused, unprotected.*its dirty rate says nothing/, /colo unpause guest/);
});

test("rules: the secondary host's memory, /dev/shm and spill space", () => {
  assert.equal(secondaryMemoryNeed("qemu", 256), 3 * 256 * MIB + 320 * MIB);
  assert.equal(secondaryMemoryNeed("emu", 160), 2 * 160 * MIB + 160 * MIB);
  expect(facts({ host: (h) => (h.memory = { availableBytes: 900 * MIB, totalBytes: 2 * 2 ** 30 }) }), "host-memory", "fail", /has 900\.0 MiB available of 2\.0 GiB; the secondary needs about 1\.1 GiB \(256 MiB x 3 \+ 320\.0 MiB for qemu\)/);
  expect(facts({ host: (h) => (h.shm = { freeBytes: 300 * MIB }) }), "shm", "fail", /\/dev\/shm on h2 \(netns colo-h2\) has 300\.0 MiB free; the qemu engine keeps 2 RAM files of 256 MiB there/, /remount,size=640M/);
  expect(facts({ host: (h) => Object.assign(h.spill[0] as object, { freeBytes: 100 * MIB }) }), "spill-space", "fail", /\/var\/lib\/colo\/guest\.disk0: 100\.0 MiB free for 1 disk\(s\) spilling up to 256\.0 MiB/, /active-disk=/);
  expect(facts({ host: (h) => Object.assign(h.spill[0] as object, { tmpfs: true }) }), "spill-space", "warn", /is on tmpfs/, /take RAM/);
  expect(facts({ host: (h) => (h.bridges = [{ name: "colobr", present: false }]) }), "bridge", "warn", /bridge colobr is not on h2/);
});

test("rules: the link must carry the dirty rate (FAIL below it, a warning below twice it)", () => {
  expect(facts({ bandwidth: 3_000_000 }), "bandwidth", "fail", /^24\.0 Mbit\/s .* cannot carry the guest's dirty rate 1000 pages\/s \(32\.8 Mbit\/s/, /a faster link/);
  expect(facts({ bandwidth: 6_000_000 }), "bandwidth", "warn", /1\.5x headroom/);
  expect(facts({ vm: (v) => Object.assign(v.dirty, { dirtyPages: 0, pagesPerSec: 0, bytesPerSec: 0 }) }), "bandwidth", "ok", /vs a guest that dirtied no page in 1000 ms$/);
});

test("rules: the arbiter: reachable, both sides or neither, the VM's lease not held by another", () => {
  const off = facts();
  delete off.arbiter;
  expect(off, "arbiter", "fail", /the secondary was started with --arbiter 10\.77\.0\.1:8003, this check without/);
  const neither = facts({ host: (h) => (h.receiver = { colo: true }) });
  delete neither.arbiter;
  expect(neither, "arbiter", "ok", /no arbiter on either side/);
  expect(facts({ host: (h) => (h.receiver = { colo: true }) }), "arbiter", "fail", /the secondary was started without --arbiter/, /--arbiter 10\.77\.0\.1:8003/);
  const down = facts();
  if (down.arbiter) down.arbiter.reach = { ok: false, error: "arbiter 10.77.0.1:8003: no answer within 500 ms" };
  expect(down, "arbiter", "fail", /10\.77\.0\.1:8003 does not answer from this host: .*no answer within 500 ms/);
  const held = facts();
  if (held.arbiter?.reach.ok) held.arbiter.reach.leases = [{ vm: "guest", holder: "colo-h3:99", solo: true, remainingMs: 0 }];
  expect(held, "arbiter", "fail", /holds guest's lease for colo-h3:99 \(solo: it ran alone\)/);
  const mine = facts();
  if (mine.arbiter?.reach.ok) mine.arbiter.reach.leases = [{ vm: "guest", holder: "colo-h1:4242", solo: false, remainingMs: 800 }];
  expect(mine, "arbiter", "ok", /answers in 0\.5 ms \(1 lease\(s\)\); the secondary uses it too/);
  expect(facts({ host: (h) => (h.receiver.leaseMs = 3000) }), "arbiter", "warn", /the secondary's lease is 3000 ms, this one 1000 ms/);
});

test("rules: an unreachable receiver fails the peer check by its cause; the checks that need it are skipped", () => {
  const cases: [string, string, RegExp, RegExp][] = [
    ["REFUSED", "10.77.1.2:8002 refused the connection", /refused the connection: nothing listens there/, /colo migrate-receive --colo/],
    ["AUTH", "authentication with 10.77.1.2:8002 failed: the peer has another key", /the peer has another key/, /same key/],
    ["TIMEOUT", "no answer from 10.77.1.2:8002 within 5000 ms", /no answer from 10\.77\.1\.2:8002/, /firewall/],
    ["PROBE", "10.77.1.2:8002: stream offset 0: toolstack header: ident is ..., expected \"ColoTsFm\": not a colo stream", /does not answer check probes \(an older colo\)/, /update colo/],
  ];
  for (const [code, message, detail, fix] of cases) {
    const f = facts();
    f.peer = { ok: false, code, message };
    const { results, skipped } = evaluateChecks(f);
    const peer = results.find((r) => r.name === "peer");
    assert.equal(peer?.status, "fail", code);
    assert.match(peer?.detail ?? "", detail, code);
    assert.match(peer?.fix ?? "", fix, code);
    assert.deepEqual(results.map((r) => r.name), ["key", "vm", "config", "peer", "memory", "arbiter"]);
    assert.deepEqual(skipped, ["receiver", "engine", "disks", "files", "host-memory", "spill-space", "bandwidth"]);
  }
});

test("rules: a round trip over 10 ms is a warning", () => {
  const f = facts();
  if (f.peer.ok) f.peer.probe.rtt = { samples: 10, medianMs: 25, minMs: 20, maxMs: 40 };
  expect(f, "peer", "warn", /RTT median 25\.000 ms/, /one LAN/);
});
