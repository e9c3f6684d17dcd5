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
import { before } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { labDown, labTopology, labUp } from "../../src/lab/lab.js";
import { generateKeyFile } from "../../src/channel/key.js";
import { processEnded } from "../../src/api/registry.js";
import { runIn } from "../tools/run.js";
import { writeGuestConfig } from "../tools/guest-fixture.js";
import { integrationSkip, preconditionTest } from "../tools/lab-fixture.js";
import { Pair, waitFor } from "../tools/pair-fixture.js";
import { cleanupAlways, stopDaemonsUnder } from "../tools/interrupt.js";

const LAB = labTopology("ctrem");
const [H1, H2] = LAB.hosts;
const CLIENT = LAB.namespaces.client;
const IP = LAB.guestIp;

const skip = integrationSkip();
const itest = preconditionTest(skip);

let work = "";
let cfg = "";
let pair: Pair;

const colo = (host: string, args: string[]) => pair.colo(host, args);
const redis = (...args: string[]) => pair.redis(...args);
const status = (host: string) => pair.status(host);
const startIncr = () => pair.startIncr();

/** Boots the primary on h1 and protects it with a secondary on h2 (Remus mode). */
async function protectedPair(extraEnv: NodeJS.ProcessEnv = {}, intervalMs = 100): Promise<void> {
  const r = await pair.protect(cfg, ["remus", "--interval", String(intervalMs)], { extraEnv });
  assert.match(r.stdout, /protected by .*Remus mode/);
}

before(async () => {
  if (skip) return;
  work = mkdtempSync(join(tmpdir(), "colo-rem-"));
  const key = join(work, "colo.key");
  generateKeyFile(key);
  await labUp({ prefix: LAB.prefix });
  cfg = writeGuestConfig({ dir: work, name: "rem", ip: `${IP}/24`, mac: "00:16:3e:4c:00:60", bridge: LAB.hostBridge }).cfg;
  pair = new Pair(LAB, "rem", join(work, "run"), key);
});

cleanupAlways(async () => {
  if (skip || !work) return;
  await pair.destroyAll();
  await stopDaemonsUnder(join(work, "run"));
  await pair.stopArbiter();
  await labDown({ prefix: LAB.prefix });
  rmSync(work, { recursive: true, force: true });
});

itest("Remus: checkpoints run under load; SIGKILL of the primary loses no acknowledged write and keeps the connection", { timeout: 900_000 }, async () => {
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
  const before = await pair.incrCount();
  await waitFor("INCRs continue after the takeover", async () => (await pair.incrCount()) > before + 5, 60_000);
  const r = await incr.result();
  assert.deepEqual(r.errors, []);
  assert.equal(r.connectionResets, 0);
  assert.equal(r.gaps, 0, "every acknowledged INCR is in the survivor, none twice");
  assert.equal(await redis("GET", "colo:incr"), String(r.last));
});

itest("Remus: SIGKILL of the secondary; the primary releases held output and runs on unprotected", { timeout: 900_000 }, async () => {
  await protectedPair();
  const incr = startIncr();
  await waitFor("INCRs flow", async () => Number((await redis("GET", "colo:incr")) || "0") > 5, 60_000);
  const sec = await status(H2);
  process.kill(sec.pid, "SIGKILL");
  await waitFor("the primary notices", async () => (await status(H1)).replication?.mode === "unprotected", 30_000);
  const before = await pair.incrCount();
  await waitFor("INCRs continue", async () => (await pair.incrCount()) > before + 5, 60_000);
  const r = await incr.result();
  assert.deepEqual(r.errors, []);
  assert.equal(r.gaps, 0);
  assert.equal((await status(H1)).replication?.failovers[0]?.role, "primary");
});

itest("Remus: the primary killed in the middle of a checkpoint; the half checkpoint is never applied", { timeout: 900_000 }, async () => {
  // Test-only hook: the primary sleeps 0.7 s (below the 1 s peer timeout) inside every checkpoint, after NEW and before its pages, the guest paused.
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

itest("Remus: heartbeats keep a session with checkpoints rarer than the peer timeout alive", { timeout: 600_000 }, async () => {
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
  // A failure here says why from both daemons' logs (a CI run once saw the secondary stay).
  let seen = "";
  await pair.explained(() =>
    waitFor(() => `the secondary goes away (h2 lists: ${seen})`, async () => {
      seen = (await colo(H2, ["list", "--json"])).stdout.trim();
      return (JSON.parse(seen) as unknown[]).length === 0;
    }, 30_000),
  );
  assert.equal((await status(H1)).replication?.mode, "unprotected");
  assert.equal(await redis("PING"), "PONG");
});

itest("Remus: the secondary holds the primary's dataset: DEBUG DIGEST equal after a checkpoint and a takeover", { timeout: 600_000 }, async () => {
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
