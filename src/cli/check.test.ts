/**
 * `colo check` through the real entry point (main.js in a child process),
 * no VM: its one-line errors for bad input (no daemon reached), and a whole
 * check against a real receiver (acceptIncoming with the daemon's probe, in
 * this process, real TLS-PSK on 127.0.0.1) with a stand-in VM daemon that
 * answers the control request `check` with facts of files in a temp folder.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { serveProbe } from "../api/check-probe.js";
import type { CheckReport } from "../api/check.js";
import type { VmFacts } from "../api/daemon-check.js";
import { acceptIncoming, type Incoming } from "../api/migration.js";
import { connectSecure, type Endpoint } from "../channel/secure-channel.js";
import { emuCompatibilityDescriptor } from "../engine/emu/emu-engine.js";
import { machineHeader, MemorySink, StreamWriter } from "../state/index.js";

const MAIN = fileURLToPath(new URL("./main.js", import.meta.url));
const MIB = 2 ** 20;

let dir = "";
let key = "";
let runDirBefore: string | undefined;
const KEY = randomBytes(32);

function write(name: string, text: string | Buffer, mode = 0o644): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  chmodSync(path, mode);
  return path;
}

const config = (disk: string, memory = 96) =>
  ['name = "guest"', `memory = ${memory}`, 'kernel = "vmlinuz"', `disk = [ 'format=raw, vdev=hda, access=rw, target=${disk}' ]`, ""].join("\n");

before(() => {
  dir = mkdtempSync(join(tmpdir(), "colo-check-cli-"));
  key = write("colo.key", KEY.toString("hex") + "\n", 0o600);
  write("vmlinuz", Buffer.alloc(5000, 1));
  write("h1-data.img", Buffer.alloc(MIB));
  write("h2-data.img", Buffer.alloc(MIB));
  mkdirSync(join(dir, "h1-run"));
  // This process is the secondary host: its own run dir, as another host's would be.
  runDirBefore = process.env.COLO_RUN_DIR;
  process.env.COLO_RUN_DIR = join(dir, "h2-run");
});
after(() => {
  if (runDirBefore === undefined) delete process.env.COLO_RUN_DIR;
  else process.env.COLO_RUN_DIR = runDirBefore;
  rmSync(dir, { recursive: true, force: true });
});

/** Runs `colo ARGS` as the primary host (its run dir h1-run); the event loop stays free for the receiver here. */
function colo(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, ...args], { env: { ...process.env, COLO_RUN_DIR: join(dir, "h1-run") }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test("cli check: bad input is one line naming the thing, before any host is asked", async () => {
  const cases: [string[], RegExp][] = [
    [["check", "nosuch", "127.0.0.1", "--key-file", key], /^colo: no VM named nosuch is running \(see colo list\)\n$/],
    [["check", "guest", "127.0.0.1", "--key-file", join(dir, "none.key")], /^colo: cannot read key file .*none\.key: ENOENT/],
    [["check", "guest", "127.0.0.1", "--key-file", write("open.key", KEY.toString("hex"), 0o644)], /^colo: key file .*open\.key is readable by others \(mode 644\): chmod 600/],
    [["check", "guest", "127.0.0.1", "--key-file", key, "-C", write("bad.cfg", 'name = "guest"\nmemory = lots\n')], /^colo: .*bad\.cfg:2: memory: /],
    [["check", "guest", "127.0.0.1", "--key-file", key, "-C", join(dir, "missing.cfg")], /^colo: cannot read .*missing\.cfg: ENOENT\n$/],
    [["check", "guest", "127.0.0.1:99999", "--key-file", key], /^colo: bad port in "127\.0\.0\.1:99999": expected 1\.\.65535\n$/],
  ];
  for (const [args, stderr] of cases) {
    const r = await colo(args);
    assert.equal(r.code, 1, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, stderr);
    assert.equal(r.stderr.split("\n").length, 2, `one line: ${r.stderr}`);
  }
  const usage = await colo(["check", "guest"]);
  assert.equal(usage.code, 2);
  const sample = await colo(["check", "guest", "127.0.0.1", "--key-file", key, "--sample", "50"]);
  assert.equal(sample.code, 2);
  assert.match(sample.stderr, /^colo: --sample 50: expected 100\.\.10000 ms\n$/);
  const etcd = await colo(["check", "guest", "127.0.0.1", "--key-file", key, "--arbiter", "etcd://"]);
  assert.equal(etcd.code, 2);
  assert.match(etcd.stderr, /--arbiter/);
});

/** A stand-in VM daemon: a process whose command line says __vm-daemon, answering `check` on the VM's control socket. */
async function fakeDaemon(facts: VmFacts): Promise<ChildProcess> {
  const run = join(dir, "h1-run");
  const factsFile = write("facts.json", JSON.stringify(facts));
  const script = `
    const net = require("node:net"), fs = require("node:fs");
    const [sock, file] = process.argv.slice(-2);
    net.createServer((s) => {
      let b = "";
      s.on("data", (d) => {
        b += d;
        if (!b.includes("\\n")) return;
        const req = JSON.parse(b);
        s.end(JSON.stringify(req.op === "check" ? { ok: true, result: JSON.parse(fs.readFileSync(file, "utf8")) } : { ok: false, error: "not this stand-in's" }) + "\\n");
      });
    }).listen(sock, () => process.stdout.write("ready\\n"));`;
  const child = spawn(process.execPath, ["-e", script, "__vm-daemon-stand-in", join(run, "guest.sock"), factsFile], { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise<void>((resolve) => child.stdout?.once("data", () => resolve()));
  writeFileSync(join(run, "guest.json"), JSON.stringify({ name: "guest", pid: child.pid, config: join(dir, "guest.cfg"), startedAt: new Date().toISOString() }));
  return child;
}

function vmFacts(): VmFacts {
  const text = config("h1-data.img");
  const disk = join(dir, "h1-data.img");
  const st = statSync(disk, { bigint: true });
  return {
    name: "guest",
    state: "running",
    role: "unprotected",
    engine: "emu",
    compatibility: emuCompatibilityDescriptor(),
    memoryMiB: 96,
    config: { path: join(dir, "guest.cfg"), text },
    kernel: { path: join(dir, "vmlinuz"), bytes: 5000 },
    disks: [{ index: 0, vdev: "hda", access: "rw", path: disk, bytes: MIB, dev: st.dev.toString(), ino: st.ino.toString() }],
    bootId: readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim(),
    leaseHolder: "host:1",
    dirty: { windowMs: 200, pages: 24576, sampledPages: 24576, dirtySampledPages: 20, dirtyPages: 20, pagesPerSec: 100, bytesPerSec: 409_600, exact: true, workMs: 3 },
  };
}

test("cli check: a whole check against a waiting receiver: --json for the integration test, text lines, FAIL and exit 1 where the protection would fail", async () => {
  let listening!: (a: Endpoint) => void;
  const address = new Promise<Endpoint>((r) => (listening = r));
  const probes: string[] = [];
  const incoming: Promise<Incoming> = acceptIncoming({ host: "127.0.0.1", port: 0 }, KEY, 60_000, listening, {
    probe: (socket) => serveProbe(socket, { receiver: { colo: true } }),
    onProbe: (_peer, summary) => probes.push(summary),
  });
  incoming.catch(() => undefined);
  const at = await address;
  const daemon = await fakeDaemon(vmFacts());
  try {
    const secondary = write("secondary.cfg", config("h2-data.img"));
    const good = await colo(["check", "guest", `127.0.0.1:${at.port}`, "-C", secondary, "--key-file", key, "--json"]);
    assert.equal(good.code, 0, good.stderr + good.stdout);
    const report = JSON.parse(good.stdout) as CheckReport;
    assert.equal(report.ok, true);
    assert.deepEqual(
      report.results.map((r) => [r.name, r.status]),
      [["key", "ok"], ["vm", "ok"], ["config", "ok"], ["peer", "ok"], ["receiver", "ok"], ["engine", "ok"], ["memory", "ok"], ["disks", "ok"], ["files", "ok"], ["host-memory", "ok"], ["spill-space", "ok"], ["bandwidth", "ok"], ["arbiter", "ok"]],
    );
    const bw = report.results.find((r) => r.name === "bandwidth")?.figures ?? {};
    assert.ok((bw.linkBytesPerSec as number) > 409_600 && (bw.sentBytes as number) > 0 && (bw.sentMs as number) > 0, JSON.stringify(bw));
    assert.ok(report.ms < 15_000, `${report.ms} ms`);

    // Text: one line per check, then the summary.
    const text = await colo(["check", "guest", `127.0.0.1:${at.port}`, "-C", secondary, "--key-file", key]);
    assert.equal(text.code, 0, text.stderr);
    const lines = text.stdout.trimEnd().split("\n");
    assert.equal(lines.length, 14, text.stdout);
    assert.match(lines[5] ?? "", /^ok {3}engine {6}v86 .* state \d+ on both hosts/);
    assert.match(lines.at(-1) ?? "", /^guest -> 127\.0\.0\.1:\d+: 13 ok, 0 warning\(s\), 0 failed \(\d+ ms\)$/);

    // The VM's own config (no -C) names the primary's disk: on one machine, the secondary would replicate onto the same file.
    const own = await colo(["check", "guest", `127.0.0.1:${at.port}`, "--key-file", key]);
    assert.equal(own.code, 1, own.stdout);
    assert.match(own.stdout, /^FAIL disks {7}disk 0 \(hda, rw, replicated\): the secondary's .*h1-data\.img is the primary's own image \(one file on one machine\) -- give the secondary its own copy/m);
    assert.match(own.stderr, /^colo: check of guest -> 127\.0\.0\.1:\d+: 1 failed \(disks\); disks: /);

    const bigger = await colo(["check", "guest", `127.0.0.1:${at.port}`, "-C", write("big.cfg", config("h2-data.img", 128)), "--key-file", key]);
    assert.equal(bigger.code, 1);
    assert.match(bigger.stdout, /^FAIL memory {6}the secondary would refuse the stream: the stream's machine has 96 MiB of memory, this VM 128 MiB -- set memory = 96 in /m);

    // Nothing listening: the peer check fails by name, the checks that need the receiver are skipped.
    const closed = await colo(["check", "guest", "127.0.0.1:1", "-C", secondary, "--key-file", key]);
    assert.equal(closed.code, 1);
    assert.match(closed.stdout, /^FAIL peer {8}127\.0\.0\.1:1 refused the connection: nothing listens there -- start "colo migrate-receive --colo/m);
    assert.match(closed.stdout, /^skip receiver, engine, disks, files, host-memory, spill-space, bandwidth: they need the receiver's answer$/m);
    assert.equal(probes.length, 4, probes.join("\n"));
  } finally {
    daemon.kill();
  }
  // The receiver still takes its migration.
  const sink = new MemorySink();
  const writer = new StreamWriter(sink, { machine: machineHeader("emu", 8 * 4096) });
  await writer.writeVmConfig({ path: join(dir, "secondary.cfg"), text: config("h2-data.img") });
  await writer.flush();
  const s = await connectSecure(at, KEY, 2000);
  s.on("error", () => undefined);
  s.write(sink.bytes());
  (await incoming).socket.destroy();
  s.destroy();
});
