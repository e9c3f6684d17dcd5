/**
 * COLO compare mode end to end, with real parts (issue 5): the primary VM
 * on lab host h1, the secondary VM on h2 running on the input the primary
 * mirrors to it; the primary releases a reply when the secondary produced
 * the same bytes, and checkpoints only when they differ (or one is missing
 * past the compare timeout, or the maximum interval passed).
 *
 * Needs root and the guest image. Generous timeouts: two emulated guests
 * run at the same time here, with the client, on 2 cores.
 */
import { before } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { labDown, labTopology, labUp } from "../../src/lab/lab.js";
import { generateKeyFile } from "../../src/channel/key.js";
import { runIn } from "../tools/run.js";
import { TEST_ENGINE, writeGuestConfig } from "../tools/guest-fixture.js";
import { processEnded } from "../../src/sys/index.js";
import { engineLeftovers } from "../tools/engine-leftovers.js";
import { integrationSkip, preconditionTest } from "../tools/lab-fixture.js";
import { Pair, waitFor } from "../tools/pair-fixture.js";
import { cleanupAlways, stopDaemonsUnder } from "../tools/interrupt.js";

const LAB = labTopology("ctcmp");
const skip = integrationSkip();
const itest = preconditionTest(skip);

let work = "";
let cfg = "";
let pair: Pair;

before(async () => {
  if (skip) return;
  work = mkdtempSync(join(tmpdir(), "colo-cmp-"));
  const key = join(work, "colo.key");
  generateKeyFile(key);
  await labUp({ prefix: LAB.prefix });
  cfg = writeGuestConfig({ dir: work, name: "cmp", ip: `${LAB.guestIp}/24`, mac: "00:16:3e:4c:00:70", bridge: LAB.hostBridge }).cfg;
  pair = new Pair(LAB, "cmp", join(work, "run"), key);
});

cleanupAlways(async () => {
  if (skip || !work) return;
  await pair.destroyAll();
  await stopDaemonsUnder(join(work, "run"));
  await pair.stopArbiter();
  await labDown({ prefix: LAB.prefix });
  rmSync(work, { recursive: true, force: true });
});

/** Compare mode with a long maximum interval, so that every checkpoint in a test has a reason of its own. */
const COMPARE = ["migrate", "--colo", "--checkpoint-max-interval", "600000"];

itest("compare mode: GET/SET traffic leaves by comparison, without checkpoints for differing payloads", { timeout: 900_000 }, async (t) => {
  const r = await pair.protect(cfg, COMPARE);
  assert.match(r.stdout, /COLO compare mode/);
  const s0 = await pair.status(pair.h1);
  assert.equal(s0.replication?.replication, "compare");
  const bench = await runIn(pair.client, "redis-benchmark", ["-h", pair.ip, "-t", "set,get", "-n", "2000", "-c", "4", "-q"], { timeoutMs: 600_000 });
  assert.equal(bench.code, 0, `redis-benchmark in compare mode: ${bench.stderr}`);
  assert.doesNotMatch(bench.stdout + bench.stderr, /error|reset/i);
  assert.match(bench.stdout, /SET: [\d.]+ requests per second/);
  assert.match(bench.stdout, /GET: [\d.]+ requests per second/);
  const s = await pair.status(pair.h1);
  const reasons = s.replication?.checkpointReasons ?? {};
  assert.equal(s.replication?.mode, "primary", JSON.stringify(s.replication));
  assert.equal(reasons.payload, 0, `deterministic replies must compare equal: ${JSON.stringify(s.heldOutput)}`);
  assert.equal(reasons.length, 0, JSON.stringify(s.heldOutput));
  const output = s.heldOutput as { releasedMatched: number } | undefined;
  t.diagnostic(`checkpoint reasons ${JSON.stringify(reasons)}; held output ${JSON.stringify(output)}`);
  assert.ok((output?.releasedMatched ?? 0) > 4000, `replies left by comparison: ${JSON.stringify(output)}`);
  const sec = await pair.status(pair.h2);
  assert.equal(sec.state, "running", "in compare mode the secondary VM runs");
});

itest("compare mode: a non-deterministic reply forces a checkpoint and the client gets one consistent reply", { timeout: 900_000 }, async () => {
  await pair.protect(cfg, COMPARE);
  assert.equal(await pair.redis("SET", "k", "v"), "OK");
  const before = (await pair.status(pair.h1)).replication?.checkpointReasons ?? {};
  // TIME: seconds and microseconds of each guest's own clock; the two VMs answer differently.
  const time = await pair.redis("TIME");
  const lines = time.split("\n");
  assert.equal(lines.length, 2, `one TIME reply: ${time}`);
  for (const l of lines) assert.match(l, /^\d+$/);
  // SRANDMEMBER on a large set: the two VMs' random generators differ after their own activity.
  const members = Array.from({ length: 200 }, (_, i) => `m${i}`);
  await pair.redis("SADD", "s", ...members);
  const picked = await pair.redis("SRANDMEMBER", "s");
  assert.ok(members.includes(picked), picked);
  let seen: Record<string, number> = {};
  await waitFor(
    () => `a checkpoint for a differing reply (reasons before ${JSON.stringify(before)}, now ${JSON.stringify(seen)})`,
    async () => {
      const r = (await pair.status(pair.h1)).replication?.checkpointReasons ?? {};
      seen = r;
      return (r.payload ?? 0) + (r.length ?? 0) > (before.payload ?? 0) + (before.length ?? 0);
    },
    60_000,
  );
  // After the checkpoint both VMs hold the same state: the connection goes on, the data is intact.
  assert.equal(await pair.redis("GET", "k"), "v");
  assert.equal(await pair.redis("SCARD", "s"), "200");
});

itest("compare mode: SIGKILL of the primary under load loses no acknowledged write and keeps the connection", { timeout: 900_000 }, async () => {
  await pair.protect(cfg, COMPARE);
  const incr = pair.startIncr();
  await waitFor("INCRs flow", async () => Number((await pair.redis("GET", "colo:incr")) || "0") > 50, 120_000);
  const primary = await pair.status(pair.h1);
  process.kill(primary.pid, "SIGKILL");
  await waitFor("the secondary takes over", async () => (await pair.status(pair.h2)).replication?.mode === "unprotected", 30_000);
  const before = await pair.incrCount();
  await waitFor("INCRs continue after the takeover", async () => (await pair.incrCount()) > before + 5, 60_000);
  const r = await incr.result();
  assert.deepEqual(r.errors, []);
  assert.equal(r.connectionResets, 0);
  assert.equal(r.gaps, 0, "every acknowledged INCR is in the survivor, none twice");
  assert.equal(await pair.redis("GET", "colo:incr"), String(r.last));
});

itest("compare mode: SIGKILL of the secondary; the primary releases what it held and runs on unprotected", { timeout: 900_000 }, async () => {
  await pair.protect(cfg, COMPARE);
  const incr = pair.startIncr();
  await waitFor("INCRs flow", async () => Number((await pair.redis("GET", "colo:incr")) || "0") > 20, 120_000);
  process.kill((await pair.status(pair.h2)).pid, "SIGKILL");
  await waitFor("the primary notices", async () => (await pair.status(pair.h1)).replication?.mode === "unprotected", 30_000);
  const before = await pair.incrCount();
  await waitFor("INCRs continue", async () => (await pair.incrCount()) > before + 5, 60_000);
  const r = await incr.result();
  assert.deepEqual(r.errors, []);
  assert.equal(r.gaps, 0);
  assert.equal(r.connectionResets, 0);
});

itest("compare mode: SIGKILL of the primary's QEMU is a host failure: the secondary takes over, no write lost, the primary's daemon ends", { timeout: 900_000 }, async (t) => {
  if (TEST_ENGINE !== "qemu") {
    t.skip(`engine ${TEST_ENGINE} runs the guest inside the daemon: no engine process of its own to kill`);
    return;
  }
  await pair.protect(cfg, COMPARE);
  const incr = pair.startIncr();
  await waitFor("INCRs flow", async () => Number((await pair.redis("GET", "colo:incr")) || "0") > 20, 120_000);
  const primary = await pair.status(pair.h1);
  const qemuPid = primary.enginePid;
  assert.ok(typeof qemuPid === "number" && qemuPid !== primary.pid, `the primary's status names its QEMU: ${JSON.stringify(primary)}`);
  process.kill(qemuPid, "SIGKILL");
  await waitFor("the secondary takes over", async () => (await pair.status(pair.h2)).replication?.mode === "unprotected", 30_000);
  await waitFor("the primary's daemon ends", async () => processEnded(primary.pid), 30_000);
  // Its standby QEMU and its engine directory go with it (the killed QEMU's RAM file was unlinked once mapped).
  await waitFor("no QEMU of the primary's daemon left", async () => engineLeftovers("cmp", primary.pid).processes.length === 0, 10_000);
  assert.deepEqual(engineLeftovers("cmp", primary.pid).dirs, [], "the primary's engine directory is removed");
  const before = await pair.incrCount();
  await waitFor("INCRs continue after the takeover", async () => (await pair.incrCount()) > before + 5, 60_000);
  const r = await incr.result();
  assert.deepEqual(r.errors, []);
  assert.equal(r.connectionResets, 0);
  assert.equal(r.gaps, 0, "every acknowledged INCR is in the survivor, none twice");
  assert.equal(await pair.redis("GET", "colo:incr"), String(r.last));
  const survivor = await pair.status(pair.h2);
  assert.equal(survivor.replication?.failovers[0]?.role, "secondary");
});
