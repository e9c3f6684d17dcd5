/**
 * Re-protection (issue 14): a pair in COLO compare mode with an arbiter and
 * a replicated AOF disk; the primary host is killed under an INCR load, the
 * secondary takes over; then `colo protect` on the survivor makes the dead
 * host's old image its new secondary. Checks: the start copies only the
 * disk chunks that differ (fewer than the image holds), the pair replicates
 * again (modes, disk hashes equal inside a checkpoint), and the client's
 * one connection saw no gap, no reset and no lost write across the
 * failover and the re-protection. Bad input: `protect` on a VM already
 * protected, and toward a host that is not listening, fail in one line and
 * leave the pair as it was.
 *
 * Needs root and the guest image. Generous timeouts: two guests and a
 * client on 2 cores.
 */
import { before } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { labDown, labTopology, labUp } from "../../src/lab/lab.js";
import { generateKeyFile } from "../../src/channel/key.js";
import { createDataDisk } from "../../guest/mkdisk.js";
import { writeGuestConfig } from "../tools/guest-fixture.js";
import { integrationSkip, preconditionTest } from "../tools/lab-fixture.js";
import { Pair, waitFor } from "../tools/pair-fixture.js";
import { cleanupAlways, stopDaemonsUnder } from "../tools/interrupt.js";

const LAB = labTopology("ctrep");
const skip = integrationSkip();
const itest = preconditionTest(skip);

let work = "";
let primaryCfg = "";
let secondaryCfg = "";
let primaryImg = "";
let pair: Pair;

before(async () => {
  if (skip) return;
  work = mkdtempSync(join(tmpdir(), "colo-rep-"));
  const key = join(work, "colo.key");
  generateKeyFile(key);
  await labUp({ prefix: LAB.prefix });
  primaryImg = join(work, "primary.img");
  const secondaryImg = join(work, "secondary.img");
  await createDataDisk(primaryImg, 64, { overwrite: true });
  copyFileSync(primaryImg, secondaryImg);
  const common = { name: "rep", ip: `${LAB.guestIp}/24`, mac: "00:16:3e:4c:00:90", bridge: LAB.hostBridge, extra: "colo.appendfsync=always" };
  primaryCfg = writeGuestConfig({ ...common, dir: join(work, "p"), disk: primaryImg }).cfg;
  secondaryCfg = writeGuestConfig({ ...common, dir: join(work, "s"), disk: secondaryImg }).cfg;
  pair = new Pair(LAB, "rep", join(work, "run"), key);
  await pair.startArbiter();
});

cleanupAlways(async () => {
  if (skip || !work) return;
  await pair.destroyAll();
  await stopDaemonsUnder(join(work, "run"));
  await pair.stopArbiter();
  await labDown({ prefix: LAB.prefix });
  rmSync(work, { recursive: true, force: true });
});

itest("re-protection: after a failover the survivor protects itself again with the dead host's old image; only what differs is copied", { timeout: 900_000 }, async () => {
  await pair.protect(primaryCfg, ["migrate", "--colo"], { secondaryConfig: secondaryCfg });
  const incr = pair.startIncr(600);
  await waitFor("INCRs flow", async () => Number((await pair.redis("GET", "colo:incr").catch(() => "0")) || "0") > 20, 120_000);

  // The primary host dies: the secondary takes over.
  process.kill((await pair.status(pair.h1)).pid, "SIGKILL");
  await waitFor("h2 runs alone", async () => (await pair.status(pair.h2).catch(() => undefined))?.replication?.mode === "unprotected", 60_000);
  const before = Number(await pair.redis("GET", "colo:incr"));

  // Bad input first: nothing listens on h1 yet, and the VM is not protected twice.
  const refused = await pair.colo(pair.h2, ["protect", "rep", LAB.replIps[0], "--key-file", pair.keyFile, "-C", primaryCfg, ...pair.arbiterArgs()]);
  assert.notEqual(refused.code, 0);
  assert.equal(refused.stderr.trim().split("\n").length, 1, `one line: ${refused.stderr}`);
  assert.match(refused.stderr, new RegExp(`${LAB.replIps[0].replace(/\./g, "\\.")}`));
  assert.equal((await pair.status(pair.h2)).state, "running");

  // The dead host comes back as the new secondary, with its old image (the primary's as of the crash).
  await pair.listenSecondary("h1");
  const r = await pair.colo(pair.h2, ["protect", "rep", LAB.replIps[0], "--key-file", pair.keyFile, "-C", primaryCfg, ...pair.arbiterArgs()]);
  assert.equal(r.code, 0, r.stderr);
  const m = /checkpoint 0 paused the guest (\d+) ms .*disks: (\d+) chunks \(([\d.]+) MiB\) copied/.exec(r.stdout);
  assert.ok(m, `the start's figures: ${r.stdout}`);
  const chunks = Number(m[2]);
  const imageChunks = statSync(primaryImg).size / 2 ** 20;
  assert.ok(chunks < imageChunks, `only what differs is copied: ${chunks} of ${imageChunks} chunks`);
  assert.equal((await pair.status(pair.h2)).replication?.mode, "primary");
  assert.equal((await pair.status(pair.h1)).replication?.mode, "secondary");

  const again = await pair.colo(pair.h2, ["protect", "rep", LAB.replIps[0], "--key-file", pair.keyFile, "-C", primaryCfg, ...pair.arbiterArgs()]);
  assert.notEqual(again.code, 0);
  assert.match(again.stderr, /already replicating to/);

  // Load goes on across the new session; then the images match inside a checkpoint.
  await waitFor("INCRs go on after the re-protection", async () => Number(await pair.redis("GET", "colo:incr")) > before + 20, 120_000);
  const cp = await pair.colo(pair.h2, ["checkpoint", "rep", "--verify-disks"]);
  assert.equal(cp.code, 0, cp.stderr);
  const primary = JSON.parse(cp.stdout) as { diskHashes: { disk: number; sha256: string }[] };
  const sec = await pair.colo(pair.h1, ["disk-hashes", "rep"]);
  assert.equal(sec.code, 0, sec.stderr);
  const secondary = JSON.parse(sec.stdout) as { role: string; disks: { disk: number; sha256: string }[] };
  assert.equal(secondary.role, "secondary");
  assert.deepEqual(secondary.disks, primary.diskHashes);

  const s = await incr.result();
  assert.deepEqual(s.errors, []);
  assert.equal(s.connectionResets, 0);
  assert.equal(s.gaps, 0, "every INCR reply is the previous plus one");
  assert.equal(Number(await pair.redis("GET", "colo:incr")), s.last, "the last acknowledged write is the dataset's value");
});
