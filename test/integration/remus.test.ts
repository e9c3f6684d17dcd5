/**
 * Remus-mode replication end to end, with real parts (issue 4): a primary
 * VM on lab host h1 checkpointed every 100 ms into a secondary on h2, the
 * primary's output held until its checkpoint is acknowledged; SIGKILL of
 * either side; a test-only delay to kill the primary in the middle of a
 * checkpoint. The client is the INCR client on one open connection: every
 * acknowledged write must survive, with no gap and no reset.
 *
 * Redis runs without a data disk here: disk replication is a later issue,
 * and a shared disk written by the primary after the last checkpoint would
 * not match the secondary's memory.
 *
 * Needs root and the guest image. Generous timeouts: two emulated guests
 * on 2 cores.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { labDown, labTopology, labUp } from "../../src/lab/lab.js";
import { generateKeyFile } from "../../src/channel/key.js";
import { processEnded } from "../../src/api/registry.js";
import { COLO_BIN, REPO_ROOT, runIn, type RunResult } from "../tools/run.js";
import { writeGuestConfig } from "../tools/guest-fixture.js";
import { integrationSkip, redisFrom } from "../tools/lab-fixture.js";

const LAB = labTopology("ctrem");
const [H1, H2] = LAB.hosts;
const CLIENT = LAB.namespaces.client;
const IP = LAB.guestIp;

const skip = integrationSkip();

let work = "";
let key = "";
let cfg = "";

function envFor(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...process.env, COLO_RUN_DIR: join(work, "run"), ...extra };
}
function colo(host: string, args: string[], extraEnv: NodeJS.ProcessEnv = {}, timeoutMs = 300_000): Promise<RunResult> {
  return runIn(host, COLO_BIN, args, { env: envFor(extraEnv), timeoutMs });
}
function redis(...args: string[]): Promise<string> {
  return redisFrom(CLIENT, IP, args);
}
type Status = { pid: number; state: string; replication?: { mode: string; checkpoints: number; discardedCheckpoints: number; failovers: { role: string; reason: string }[] } };
async function status(host: string): Promise<Status> {
  const r = await colo(host, ["status", "rem"]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Status;
}
async function waitFor(what: string, fn: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`${what}: not within ${timeoutMs} ms`);
}
async function destroyAll(): Promise<void> {
  for (const h of LAB.hosts) await colo(h, ["destroy", "rem"]).catch(() => undefined);
}

/** Boots the primary on h1 and protects it with a secondary on h2. */
async function protectedPair(extraEnv: NodeJS.ProcessEnv = {}, intervalMs = 100): Promise<void> {
  await destroyAll();
  const created = await colo(H1, ["create", cfg], extraEnv);
  assert.equal(created.code, 0, created.stderr);
  const recv = spawn("ip", ["netns", "exec", H2, COLO_BIN, "migrate-receive", "--colo", "--listen", LAB.replIps[1], "--key-file", key, "--timeout", "120", "--detach"], {
    env: envFor(),
    stdio: ["ignore", "pipe", "pipe"],
  });
  await new Promise<void>((resolve, reject) => {
    let out = "";
    let err = "";
    recv.stdout.on("data", (c: Buffer) => (out += c.toString()));
    recv.stderr.on("data", (c: Buffer) => (err += c.toString()));
    recv.on("close", (code) => (code === 0 && out.includes("listening on") ? resolve() : reject(new Error(`migrate-receive --colo: ${out} ${err}`))));
  });
  const r = await colo(H1, ["remus", "rem", LAB.replIps[1], "--key-file", key, "--interval", String(intervalMs)], extraEnv);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /protected by .*Remus mode/);
  assert.equal((await status(H2)).replication?.mode, "secondary");
}

function startIncr(seconds = 240): { child: ChildProcessWithoutNullStreams; result: () => Promise<{ acked: number; gaps: number; errors: string[]; connectionResets: number; last: number }> } {
  const child = spawn("ip", ["netns", "exec", CLIENT, process.execPath, join(REPO_ROOT, "dist/test/tools/incr-client.js"), "--host", IP, "--seconds", String(seconds)], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (c: Buffer) => (out += c.toString()));
  const closed = new Promise<void>((resolve) => child.on("close", () => resolve()));
  return {
    child,
    result: async () => {
      child.stdin.end();
      await closed;
      return JSON.parse(out) as { acked: number; gaps: number; errors: string[]; connectionResets: number; last: number };
    },
  };
}

before(async () => {
  if (skip) return;
  work = mkdtempSync(join(tmpdir(), "colo-rem-"));
  key = join(work, "colo.key");
  generateKeyFile(key);
  await labUp({ prefix: LAB.prefix });
  cfg = writeGuestConfig({ dir: work, name: "rem", ip: `${IP}/24`, mac: "00:16:3e:4c:00:60", bridge: LAB.hostBridge }).cfg;
});

after(async () => {
  if (skip) return;
  await destroyAll();
  await labDown({ prefix: LAB.prefix });
  rmSync(work, { recursive: true, force: true });
});

test("Remus: checkpoints run under load; SIGKILL of the primary loses no acknowledged write and keeps the connection", { skip, timeout: 900_000 }, async () => {
  await protectedPair();
  const incr = startIncr();
  const bench = runIn(CLIENT, "redis-benchmark", ["-h", IP, "-t", "set", "-n", "3000", "-c", "4", "-q"], { timeoutMs: 600_000 });
  // 300 consecutive checkpoints under load: no hang, no guest crash.
  await waitFor("300 checkpoints under load", async () => ((await status(H1)).replication?.checkpoints ?? 0) >= 300, 400_000);
  const b = await bench;
  assert.equal(b.code, 0, `redis-benchmark under Remus: ${b.stderr}`);
  assert.doesNotMatch(b.stdout + b.stderr, /error|reset/i);
  const primary = await status(H1);
  assert.equal(primary.replication?.mode, "primary");
  assert.deepEqual(primary.replication?.failovers, []);

  process.kill(primary.pid, "SIGKILL");
  await waitFor("the secondary takes over", async () => (await status(H2)).replication?.mode === "unprotected", 30_000);
  const s2 = await status(H2);
  assert.equal(s2.state, "running");
  assert.equal(s2.replication?.failovers[0]?.role, "secondary");

  // The INCR client keeps going on its one connection through the takeover.
  const before = Number(await redis("GET", "colo:incr"));
  await waitFor("INCRs continue after the takeover", async () => Number(await redis("GET", "colo:incr")) > before + 5, 60_000);
  const r = await incr.result();
  assert.deepEqual(r.errors, []);
  assert.equal(r.connectionResets, 0);
  assert.equal(r.gaps, 0, "every acknowledged INCR is in the survivor, none twice");
  assert.equal(await redis("GET", "colo:incr"), String(r.last));
});

test("Remus: SIGKILL of the secondary; the primary releases held output and runs on unprotected", { skip, timeout: 900_000 }, async () => {
  await protectedPair();
  const incr = startIncr();
  await waitFor("INCRs flow", async () => Number((await redis("GET", "colo:incr")) || "0") > 5, 60_000);
  const sec = await status(H2);
  process.kill(sec.pid, "SIGKILL");
  await waitFor("the primary notices", async () => (await status(H1)).replication?.mode === "unprotected", 30_000);
  const before = Number(await redis("GET", "colo:incr"));
  await waitFor("INCRs continue", async () => Number(await redis("GET", "colo:incr")) > before + 5, 60_000);
  const r = await incr.result();
  assert.deepEqual(r.errors, []);
  assert.equal(r.gaps, 0);
  assert.equal((await status(H1)).replication?.failovers[0]?.role, "primary");
});

test("Remus: the primary killed in the middle of a checkpoint; the half checkpoint is never applied", { skip, timeout: 900_000 }, async () => {
  // Test-only hook: the primary sleeps 0.7 s (below the 1 s peer timeout) inside every checkpoint, after its pages and before its state.
  await protectedPair({ COLO_TEST_CHECKPOINT_DELAY_MS: "700" });
  assert.equal(await redis("SET", "before", "kept"), "OK"); // released only once its checkpoint is acknowledged
  const primary = await status(H1);
  // Wait until a checkpoint is in its delay: the guest is paused then.
  await waitFor("a checkpoint in progress", async () => (await status(H1)).state === "paused", 30_000);
  process.kill(primary.pid, "SIGKILL");
  await waitFor("the secondary takes over", async () => (await status(H2)).replication?.mode === "unprotected", 30_000);
  assert.equal(await redis("GET", "before"), "kept");
  assert.equal(await redis("PING"), "PONG");
  assert.equal((await status(H2)).replication?.discardedCheckpoints, 1, "the half checkpoint was discarded, not applied");
  assert.ok(processEnded(primary.pid));
});

test("Remus: heartbeats keep a session with checkpoints rarer than the peer timeout alive", { skip, timeout: 600_000 }, async () => {
  // Checkpoints every 3 s, peer timeout 1 s (default), heartbeats every 200 ms (default).
  await protectedPair({}, 3000);
  await new Promise((r) => setTimeout(r, 5000)); // the point is to let time pass without checkpoints
  const p = await status(H1);
  const s = await status(H2);
  assert.equal(p.replication?.mode, "primary", JSON.stringify(p.replication));
  assert.equal(s.replication?.mode, "secondary", JSON.stringify(s.replication));
  assert.deepEqual(p.replication?.failovers, []);
  assert.equal(await redis("PING"), "PONG");

  // Operator failover on the primary: replication ends in order, the secondary discards its copy (no split brain).
  const f = await colo(H1, ["failover", "rem"]);
  assert.equal(f.code, 0, f.stderr);
  assert.match(f.stdout, /replication stopped in order/);
  await waitFor("the secondary goes away", async () => JSON.parse((await colo(H2, ["list", "--json"])).stdout).length === 0, 30_000);
  assert.equal((await status(H1)).replication?.mode, "unprotected");
  assert.equal(await redis("PING"), "PONG");
});

test("Remus: the secondary holds the primary's dataset: DEBUG DIGEST equal after a checkpoint and a takeover", { skip, timeout: 600_000 }, async () => {
  await protectedPair({}, 500);
  for (let i = 0; i < 20; i++) assert.equal(await redis("SET", `d${i}`, `v${i}`), "OK");
  const digest = await redis("DEBUG", "DIGEST");
  const p = await status(H1);
  const after = p.replication?.checkpoints ?? 0;
  await waitFor("another checkpoint", async () => ((await status(H1)).replication?.checkpoints ?? 0) > after + 1, 30_000);
  process.kill(p.pid, "SIGKILL");
  await waitFor("the secondary takes over", async () => (await status(H2)).replication?.mode === "unprotected", 30_000);
  assert.equal(await redis("DEBUG", "DIGEST"), digest);
});
