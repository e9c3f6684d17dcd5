/**
 * VM state moving between hosts, with real parts: save -> restore on one
 * lab host (Redis DEBUG DIGEST equal), live migration h1 -> h2 idle (digest
 * equal) and h2 -> h1 under redis-benchmark load with an INCR client on one
 * open connection (no client error, no lost or repeated write, the
 * connection survives), and refusals (wrong key, memory mismatch) that
 * leave the source running; with --arbiter, the handover key taken by the
 * destination before it resumes.
 *
 * Needs root and the guest image. Generous timeouts: emulated guests on 2 cores.
 */
import { before } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { labDown, labTopology, labUp } from "../../src/lab/lab.js";
import { createDataDisk } from "../../guest/mkdisk.js";
import { generateKeyFile } from "../../src/channel/key.js";
import { COLO_BIN, REPO_ROOT, runIn, type RunResult } from "../tools/run.js";
import { writeGuestConfig } from "../tools/guest-fixture.js";
import { integrationSkip, preconditionTest, redisFrom } from "../tools/lab-fixture.js";
import { waitFor, type IncrResult } from "../tools/pair-fixture.js";
import { cleanupAlways, stopDaemonsUnder } from "../tools/interrupt.js";

const LAB = labTopology("ctmig");
const [H1, H2] = LAB.hosts;
const CLIENT = LAB.namespaces.client;
const IP = LAB.guestIp;

const skip = integrationSkip();
const itest = preconditionTest(skip);

let work = "";
let env: NodeJS.ProcessEnv = {};
let key = "";
let cfg = "";

function colo(host: string, args: string[], timeoutMs = 120_000): Promise<RunResult> {
  return runIn(host, COLO_BIN, args, { env, timeoutMs });
}
function redis(...args: string[]): Promise<string> {
  return redisFrom(CLIENT, IP, args);
}
/** Where the LAN thinks the guest is, and the destination's NIC counters: printed when the guest is unreachable. */
async function diagnose(host: string): Promise<string> {
  const fdb = await runIn(LAB.namespaces.lan, "bridge", ["fdb", "show", "br", LAB.lanBridge]);
  const hostFdb = await runIn(host, "bridge", ["fdb", "show", "br", LAB.hostBridge]);
  const status = await colo(host, ["status", "mig"]);
  const mac = /00:16:3e:4c:00:30[^\n]*/g;
  return `LAN fdb: ${fdb.stdout.match(mac)?.join("; ")}; ${host} fdb: ${hostFdb.stdout.match(mac)?.join("; ")}; status: ${status.stdout.replace(/\s+/g, "")}`;
}
async function redisAfterMove(host: string, ...args: string[]): Promise<string> {
  const r = await runIn(CLIENT, "redis-cli", ["-h", IP, ...args], { timeoutMs: 30_000 });
  if (r.code !== 0) assert.fail(`redis-cli ${args.join(" ")} after the move failed (${r.code ?? r.signal}): ${await diagnose(host)}`);
  return r.stdout.trim();
}
async function vmsOn(host: string): Promise<{ name: string; state: string }[]> {
  return JSON.parse((await colo(host, ["list", "--json"])).stdout) as { name: string; state: string }[];
}
/** Starts migrate-receive on `host` and resolves once it listens. */
async function receiveOn(host: string, listenIp: string, keyFile = key): Promise<{ done: Promise<RunResult> }> {
  const child = spawn("ip", ["netns", "exec", host, COLO_BIN, "migrate-receive", "--listen", listenIp, "--key-file", keyFile, "--timeout", "120"], {
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  const listening = new Promise<void>((resolve, reject) => {
    child.stdout.on("data", (c: Buffer) => {
      stdout += c.toString();
      if (stdout.includes("listening on")) resolve();
    });
    child.on("close", () => reject(new Error(`migrate-receive ended before listening: ${stderr}`)));
  });
  const done = new Promise<RunResult>((resolve) => child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr })));
  await listening;
  return { done };
}

before(async () => {
  if (skip) return;
  work = mkdtempSync(join(tmpdir(), "colo-mig-"));
  env = { ...process.env, COLO_RUN_DIR: join(work, "run") };
  key = join(work, "colo.key");
  generateKeyFile(key);
  await labUp({ prefix: LAB.prefix });
  const disk = join(work, "data.img");
  await createDataDisk(disk, 64);
  cfg = writeGuestConfig({ dir: work, name: "mig", ip: `${IP}/24`, mac: "00:16:3e:4c:00:30", bridge: LAB.hostBridge, disk }).cfg;
  const created = await colo(H1, ["create", cfg], 300_000);
  assert.equal(created.code, 0, created.stderr);
});

cleanupAlways(async () => {
  if (skip || !work) return;
  for (const h of LAB.hosts) await colo(h, ["destroy", "mig"]).catch(() => undefined);
  await stopDaemonsUnder(join(work, "run"));
  await labDown({ prefix: LAB.prefix });
  rmSync(work, { recursive: true, force: true });
});

itest("save -> restore: the guest continues with the same dataset on the same IP", { timeout: 300_000 }, async () => {
  assert.equal(await redis("SET", "saved", "yes"), "OK");
  const digest = await redis("DEBUG", "DIGEST");
  const file = join(work, "mig.save");
  const saved = await colo(H1, ["save", "mig", file]);
  assert.equal(saved.code, 0, saved.stderr);
  assert.match(saved.stdout, /saved to .* VM destroyed/);
  assert.deepEqual(await vmsOn(H1), [], "xl save semantics: the VM is gone after saving");
  const restored = await colo(H1, ["restore", file]);
  assert.equal(restored.code, 0, restored.stderr);
  assert.equal(await redis("DEBUG", "DIGEST"), digest);
  assert.equal(await redis("GET", "saved"), "yes");
});

itest("a corrupt save file is refused with a clear error and nothing runs", { timeout: 120_000 }, async () => {
  const file = join(work, "mig.save");
  const bad = join(work, "bad.save");
  const bytes = readFileSync(file);
  writeFileSync(bad, bytes.subarray(0, Math.floor(bytes.length / 2)));
  const r = await colo(H2, ["restore", bad]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /^colo: restore .*bad\.save: .*(truncated|ended)/im);
  assert.deepEqual(await vmsOn(H2), []);
});

itest("migration is refused on a wrong key and on a memory mismatch; the source runs on", { timeout: 300_000 }, async () => {
  const otherKey = join(work, "other.key");
  generateKeyFile(otherKey);
  const recv = await receiveOn(H2, LAB.replIps[1]);
  const refused = await colo(H1, ["migrate", "mig", LAB.replIps[1], "--key-file", otherKey]);
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /authentication .*failed/i);
  assert.equal(await redis("PING"), "PONG", "source still serving");
  assert.equal((await vmsOn(H1))[0]?.state, "running");
  // The receiver dropped that connection (and logged it) and waits on: a peer with another key cannot make it give up.
  const early = await Promise.race([recv.done, new Promise<undefined>((r) => setTimeout(() => r(undefined), 1000))]);
  assert.equal(early, undefined, "the receiver is still waiting after a rejected peer");

  const bigger = join(work, "bigger.cfg");
  const text = readFileSync(cfg, "utf8");
  const mib = Number(/^memory = (\d+)$/m.exec(text)?.[1]);
  assert.ok(mib > 0, "the config names its memory");
  const other = mib + 32;
  writeFileSync(bigger, text.replace(/^memory = \d+$/m, `memory = ${other}`));
  // The same receiver: the right key and a VM_CONFIG it accepts make this the migration, which then fails.
  const r = await colo(H1, ["migrate", "mig", LAB.replIps[1], "--key-file", key, "-C", bigger]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, new RegExp(`${mib} MiB.*${other} MiB|${other} MiB.*${mib} MiB`));
  assert.notEqual((await recv.done).code, 0);
  const log = readFileSync(join(work, "run", "netns", H2, "incoming-8002.log"), "utf8");
  assert.match(log, /connection from [\d.]+:\d+ dropped: authentication failed \(the peer has another key\)/);
  assert.equal(await redis("PING"), "PONG", "source still serving");
  assert.equal((await vmsOn(H1))[0]?.state, "running");
  assert.deepEqual(await vmsOn(H2), [], "nothing left on the destination");
});

itest("live migration h1 -> h2 idle: same dataset, source destroyed only after the destination runs", { timeout: 300_000 }, async () => {
  const digest = await redis("DEBUG", "DIGEST");
  const recv = await receiveOn(H2, LAB.replIps[1]);
  const r = await colo(H1, ["migrate", "mig", LAB.replIps[1], "--key-file", key]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /round 0: \d+ pages \(\d+ zero\), [\d.]+ MiB at [\d.]+ MB\/s/);
  assert.match(r.stdout, /migrated to .* downtime \d+ ms/);
  const received = await recv.done;
  assert.equal(received.code, 0, received.stderr);
  assert.deepEqual(await vmsOn(H1), []);
  assert.equal((await vmsOn(H2))[0]?.state, "running");
  assert.equal(await redisAfterMove(H2, "DEBUG", "DIGEST"), digest);
});

/** The lab host the VM runs on now, and the other one (tests may run alone). */
async function placement(): Promise<{ from: string; to: string; toIp: string }> {
  const onH1 = (await vmsOn(H1)).length > 0;
  return onH1 ? { from: H1, to: H2, toIp: LAB.replIps[1] } : { from: H2, to: H1, toIp: LAB.replIps[0] };
}

itest("live migration under redis-benchmark load: no client error, one connection, no lost write", { timeout: 600_000 }, async () => {
  const { from, to, toIp } = await placement();
  const incr = spawn("ip", ["netns", "exec", CLIENT, process.execPath, join(REPO_ROOT, "dist/test/tools/incr-client.js"), "--host", IP, "--seconds", "240"], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let incrOut = "";
  incr.stdout.on("data", (c: Buffer) => (incrOut += c.toString()));
  const incrDone = new Promise<void>((resolve) => incr.on("close", () => resolve()));
  const bench = runIn(CLIENT, "redis-benchmark", ["-h", IP, "-t", "set,get", "-n", "4000", "-c", "4", "-q"], { timeoutMs: 400_000 });

  // Let load build up: the INCR client's counter exists and climbs before migrating.
  await waitFor("INCRs flow", async () => Number((await redis("GET", "colo:incr")) || "0") > 10, 120_000);
  const before = await redis("GET", "colo:incr");
  assert.match(before, /^\d+$/, `colo:incr holds a count before the migration: ${JSON.stringify(before)}`);
  const recv = await receiveOn(to, toIp);
  const r = await colo(from, ["migrate", "mig", toIp, "--key-file", key]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await recv.done).code, 0);

  const b = await bench;
  assert.equal(b.code, 0, `redis-benchmark failed: ${b.stderr}`);
  assert.doesNotMatch(b.stdout + b.stderr, /error|reset/i);
  assert.match(b.stdout.replace(/\r/g, "\n"), /GET: [\d.]+ requests per second/);

  incr.stdin.end();
  await incrDone;
  const s = JSON.parse(incrOut) as IncrResult;
  assert.deepEqual(s.errors, []);
  assert.equal(s.connectionResets, 0);
  assert.equal(s.gaps, 0, "every INCR reply is the previous plus one");
  assert.ok(s.acked > 10, `INCRs acknowledged: ${s.acked}`);
  // No gap: the client wrote every value from its first reply to its last; the one read before the migration is one of them.
  assert.ok(s.first !== null && s.last !== null && Number(before) >= s.first && Number(before) <= s.last, `colo:incr read ${before} before the migration, the client wrote ${s.first}..${s.last}`);
  assert.equal(await redisAfterMove(to, "GET", "colo:incr"), String(s.last), "the last acknowledged write is the dataset's value");
  assert.equal((await vmsOn(to))[0]?.state, "running");
  assert.deepEqual(await vmsOn(from), []);
});

itest("live migration with --arbiter: the destination resumes only once it holds the handover key; the source ends", { timeout: 300_000 }, async () => {
  const { from, to, toIp } = await placement();
  const digest = await redis("DEBUG", "DIGEST");
  const arbiter = spawn("ip", ["netns", "exec", LAB.namespaces.lan, COLO_BIN, "arbiter", "--listen", LAB.arbiterIp, "--key-file", key], { env, stdio: ["ignore", "pipe", "pipe"] });
  let arbiterOut = "";
  arbiter.stdout.on("data", (c: Buffer) => (arbiterOut += c.toString()));
  arbiter.stderr.on("data", (c: Buffer) => (arbiterOut += c.toString()));
  try {
    await waitFor("the arbiter listens", () => Promise.resolve(arbiterOut.includes("arbiter listening")), 30_000);
    const recv = await receiveOn(to, toIp);
    const r = await colo(from, ["migrate", "mig", toIp, "--key-file", key, "--arbiter", LAB.arbiterIp]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /handover: the destination said it runs/);
    assert.equal((await recv.done).code, 0);
    // The destination took the migration's key, solo, before it resumed.
    await waitFor("the arbiter logged the handover", () => Promise.resolve(/lease of mig@handover:[0-9a-f]{16}: destination@\S+ runs alone/.test(arbiterOut)), 10_000);
    assert.deepEqual(await vmsOn(from), []);
    assert.equal((await vmsOn(to))[0]?.state, "running");
    assert.equal(await redisAfterMove(to, "DEBUG", "DIGEST"), digest);
  } finally {
    arbiter.kill("SIGTERM");
  }
});
