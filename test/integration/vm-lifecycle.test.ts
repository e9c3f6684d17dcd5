/**
 * The foundation end to end, with real parts: the guest image built from
 * Debian packages, the emu engine, a TAP on a lab host's bridge, a raw ext4
 * data disk, Redis in the guest, redis-cli from the client namespace.
 *
 * Needs root and the guest image (scripts/test.sh builds it). Timeouts are
 * generous: two emulated boots (13-60 s each) share 2 cores with the runner.
 */
import { before } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { spawn } from "node:child_process";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { labDown, labUp } from "../../src/lab/lab.js";
import { processEnded } from "../../src/api/registry.js";
import { createDataDisk } from "../../guest/mkdisk.js";
import { COLO_BIN, runIn, type RunResult } from "../tools/run.js";
import { GUEST_KERNEL, TEST_ENGINE, writeGuestConfig } from "../tools/guest-fixture.js";
import { integrationSkip, preconditionTest, redisFrom } from "../tools/lab-fixture.js";
import { cleanupAlways, stopDaemonsUnder } from "../tools/interrupt.js";

const PREFIX = "ctvm";
const HOST = `${PREFIX}-h1`;
const CLIENT = `${PREFIX}-client`;
const GUEST_IP = "10.77.0.10";
const BOOT_TIMEOUT_MS = 240_000;

const skip = integrationSkip();
const itest = preconditionTest(skip);

let work = "";
let env: NodeJS.ProcessEnv = {};

/** colo on the lab host (each lab host has its own view of VMs, like a real host). */
function colo(args: string[], timeoutMs = 60_000): Promise<RunResult> {
  return runIn(HOST, COLO_BIN, args, { env, timeoutMs });
}
function coloOnHost(args: string[], timeoutMs = BOOT_TIMEOUT_MS): Promise<RunResult> {
  return runIn(HOST, COLO_BIN, args, { env, timeoutMs });
}
function redis(...args: string[]): Promise<string> {
  return redisFrom(CLIENT, GUEST_IP, args);
}
async function hostHasLink(name: string): Promise<boolean> {
  const r = await runIn(HOST, "ip", ["link", "show", name]);
  return r.code === 0;
}
function pidAlive(pid: number): boolean {
  return !processEnded(pid);
}

before(async () => {
  if (skip) return;
  work = mkdtempSync(join(tmpdir(), "colo-it-"));
  env = { ...process.env, COLO_RUN_DIR: join(work, "run") };
  await labUp({ prefix: PREFIX });
});

cleanupAlways(async () => {
  if (skip || !work) return;
  await colo(["destroy", "guest"]).catch(() => undefined);
  await stopDaemonsUnder(join(work, "run"));
  await labDown({ prefix: PREFIX });
  rmSync(work, { recursive: true, force: true });
});

itest("a config error is one line naming file:line, and nothing is started", {}, async () => {
  const cfg = join(work, "bad.cfg");
  writeFileSync(cfg, 'name = "bad"\nmemory = 12x\n');
  const r = await colo(["create", cfg]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, new RegExp(`${cfg.replace(/[.]/g, "\\.")}:2: memory`));
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  assert.equal((await colo(["list", "--json"])).stdout.trim(), "[]");
});

itest("a missing kernel fails create with one error naming it; no daemon, no TAP left", {}, async () => {
  const f = writeGuestConfig({ dir: work, name: "nokernel", ip: `${GUEST_IP}/24`, mac: "00:16:3e:4c:00:11", bridge: "colobr" });
  const text = (await import("node:fs")).readFileSync(f.cfg, "utf8");
  const broken = text.replace(basename(GUEST_KERNEL), "no-such-kernel");
  assert.notEqual(broken, text, "the config names the kernel");
  writeFileSync(f.cfg, broken);
  const r = await coloOnHost(["create", f.cfg], 60_000);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /colo: create nokernel: .*kernel .*no-such-kernel.*ENOENT/);
  assert.equal((await colo(["list", "--json"])).stdout.trim(), "[]");
  assert.equal(await hostHasLink("cv-nokernel"), false);
});

itest("a missing bridge fails create naming the bridge; nothing left behind", {}, async () => {
  const f = writeGuestConfig({ dir: work, name: "nobridge", ip: `${GUEST_IP}/24`, mac: "00:16:3e:4c:00:12", bridge: "nosuchbr" });
  const r = await coloOnHost(["create", f.cfg], 60_000);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /nosuchbr/);
  assert.equal((await colo(["list", "--json"])).stdout.trim(), "[]");
  assert.equal(await hostHasLink("cv-nobridge"), false);
});

itest("TAP creation without permission fails create with one error naming the call; nothing left", {}, async () => {
  const dir = mkdtempSync(join(tmpdir(), "colo-noperm-"));
  try {
    chmodSync(dir, 0o777);
    const f = writeGuestConfig({ dir, name: "noperm", ip: `${GUEST_IP}/24`, mac: "00:16:3e:4c:00:14", bridge: "colobr" });
    chmodSync(f.cfg, 0o644);
    const unprivileged = { ...env, COLO_RUN_DIR: join(dir, "run") };
    const r = await runIn(HOST, "setpriv", ["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all", COLO_BIN, "create", f.cfg], {
      env: unprivileged,
      timeoutMs: 60_000,
    });
    assert.notEqual(r.code, 0);
    // Debian's /dev/net/tun is 0666 (then TUNSETIFF fails: EPERM); some hosts make it 0660 (open fails: EACCES).
    assert.match(r.stderr, /^colo: create noperm: .*(TUNSETIFF.*EPERM|\/dev\/net\/tun.*EACCES)/);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.equal(await hostHasLink("cv-noperm"), false);
    const list = await runIn(HOST, COLO_BIN, ["list", "--json"], { env: unprivileged });
    assert.equal(list.stdout.trim(), "[]");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

itest("boot, Redis over the lab LAN, console, pause, data surviving destroy + create, clean destroy", { timeout: 900_000 }, async () => {
  const disk = join(work, "guest-data.img");
  await createDataDisk(disk, 64);
  const f = writeGuestConfig({ dir: work, name: "guest", ip: `${GUEST_IP}/24`, mac: "00:16:3e:4c:00:10", bridge: "colobr", disk });

  const created = await coloOnHost(["create", f.cfg]);
  assert.equal(created.code, 0, `create failed: ${created.stderr}`);
  assert.match(created.stdout, /guest: guest ready in [\d.]+ s/);

  assert.equal(await redis("PING"), "PONG");
  assert.equal(await redis("SET", "colo:key", "survives"), "OK");
  assert.equal(await redis("GET", "colo:key"), "survives");

  const list = JSON.parse((await colo(["list", "--json"])).stdout) as { name: string; pid: number; state: string; netns: string }[];
  assert.equal(list.length, 1);
  const first = list[0];
  assert.ok(first);
  assert.equal(first.name, "guest");
  assert.equal(first.state, "running");
  assert.equal(first.netns, HOST);
  assert.equal(await hostHasLink("cv-guest"), true);

  // The console shows the guest's shell: run a command whose output differs from its echo.
  const consoleOut = await new Promise<string>((resolve, reject) => {
    const child = spawn("ip", ["netns", "exec", HOST, COLO_BIN, "console", "guest", "--no-replay"], { env, stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`no shell output on the console: ${JSON.stringify(out)}`));
    }, 60_000);
    child.stdout.on("data", (c: Buffer) => {
      out += c.toString();
      if (out.includes("CONSOLE-42")) {
        clearTimeout(timer);
        child.stdin.end();
        resolve(out);
      }
    });
    child.stdin.write("echo CONSOLE-$((6*7)) on $(hostname)\n");
  });
  assert.match(consoleOut, /CONSOLE-42 on guest/);

  // Pause: the guest stops answering; unpause: it answers again.
  assert.equal((await colo(["pause", "guest"])).code, 0);
  const status = JSON.parse((await colo(["status", "guest"])).stdout) as { state: string; eventLoopDelay: { maxMs: number; samples: number; resolutionMs: number } };
  assert.equal(status.state, "paused");
  // The daemon's event loop has been sampled since it started (a boot's worth of samples, every 10 ms).
  assert.ok(status.eventLoopDelay.samples > 50, JSON.stringify(status.eventLoopDelay));
  assert.ok(status.eventLoopDelay.maxMs > 0, `a boot delays the loop somewhat: ${JSON.stringify(status.eventLoopDelay)}`);
  // redis-cli 7.0 has no connect timeout option: it is stopped from outside after 3 s.
  const whilePaused = await runIn(CLIENT, "redis-cli", ["-h", GUEST_IP, "PING"], { timeoutMs: 3000 });
  assert.equal(whilePaused.signal, "SIGKILL", `a paused guest must not answer (redis-cli: ${whilePaused.stdout}${whilePaused.stderr})`);
  assert.notEqual(whilePaused.stdout.trim(), "PONG");
  assert.equal((await colo(["unpause", "guest"])).code, 0);
  assert.equal(await redis("PING"), "PONG");

  // Make the AOF durable on the data disk, then destroy.
  assert.match(await redis("BGREWRITEAOF"), /^Background append only file rewriting (started|scheduled)$/);
  assert.equal(await redis("CONFIG", "SET", "appendfsync", "always"), "OK");
  assert.equal(await redis("SET", "colo:key2", "also"), "OK");
  const destroyed = await colo(["destroy", "guest"]);
  assert.equal(destroyed.code, 0, destroyed.stderr);
  assert.equal(pidAlive(first.pid), false, "daemon gone");
  assert.equal(await hostHasLink("cv-guest"), false, "TAP gone");
  assert.equal((await colo(["list", "--json"])).stdout.trim(), "[]");
  assert.deepEqual(readdirSync(join(work, "run", "netns", HOST)).filter((f) => !f.endsWith(".log")), [], "no run files left");

  // Same disk, new VM: Redis reloads its append-only file.
  const again = await coloOnHost(["create", f.cfg]);
  assert.equal(again.code, 0, `second create failed: ${again.stderr}`);
  assert.equal(await redis("GET", "colo:key"), "survives");
  assert.equal(await redis("GET", "colo:key2"), "also");
  assert.equal((await colo(["destroy", "guest"])).code, 0);
});

itest("a SIGKILLed daemon leaves no stale entry in colo list", { timeout: 600_000 }, async () => {
  const f = writeGuestConfig({ dir: work, name: "victim", ip: `${GUEST_IP}/24`, mac: "00:16:3e:4c:00:13", bridge: "colobr" });
  const created = await coloOnHost(["create", f.cfg]);
  assert.equal(created.code, 0, created.stderr);
  const list = JSON.parse((await colo(["list", "--json"])).stdout) as { name: string; pid: number }[];
  const victim = list.find((v) => v.name === "victim");
  assert.ok(victim);
  process.kill(victim.pid, "SIGKILL");
  await new Promise<void>((resolve) => {
    const check = () => (pidAlive(victim.pid) ? setTimeout(check, 20) : resolve());
    check();
  });
  assert.equal((await colo(["list", "--json"])).stdout.trim(), "[]");
  assert.equal(await hostHasLink("cv-victim"), false, "the kernel removes a non-persistent TAP with its last fd");
  if (TEST_ENGINE === "qemu") {
    // QEMU dies with its daemon (setpriv --pdeathsig); its RAM files were unlinked once mapped.
    const qemuOfVictim = (): boolean =>
      readdirSync("/proc").some((p) => /^\d+$/.test(p) && (() => { try { return readFileSync(`/proc/${p}/cmdline`, "latin1").includes("guest=victim"); } catch { return false; } })());
    const deadline = process.hrtime.bigint() + 10_000_000_000n;
    while (qemuOfVictim() && process.hrtime.bigint() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(qemuOfVictim(), false, "no QEMU of the killed daemon");
    for (const d of readdirSync("/dev/shm").filter((n) => n.startsWith("colo-victim-"))) {
      assert.deepEqual(readdirSync(join("/dev/shm", d)).filter((n) => n.startsWith("ram-")), [], `no guest RAM file left in /dev/shm/${d}`);
    }
  }
});
