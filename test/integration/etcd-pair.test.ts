/**
 * etcd as the lease holder of a real pair (issue 14): a 3-member etcd
 * cluster from Debian's etcd-server runs in the lab's LAN namespace on the
 * arbiter's address (started and removed here); both sides of a pair in
 * COLO compare mode with a replicated AOF disk hold their lease there
 * (`--arbiter etcd://...`), under an INCR load on one connection.
 *
 * Pair A: the etcd leader killed (no failover, the load goes on); the
 * majority lost while the pair is connected (no failover); then the
 * replication link cut while the majority is still lost: the primary may
 * not run alone (fenced: paused, nothing released) and the secondary may not
 * take over — neither side serves. The majority back: the secondary takes
 * over (the fenced primary stopped renewing), with every acknowledged write.
 *
 * Pair B: the link cut with etcd healthy: the primary keeps its lease and
 * runs alone, the secondary steps down; protected again (`colo protect
 * --reprotect`), the secondary killed: the primary runs alone and protects
 * itself again; then the primary killed: the secondary takes over. The
 * client's one connection sees no reset, no gap, no lost write throughout.
 *
 * Needs root, etcd and the guest image. Generous timeouts: two guests,
 * three etcd members and a client on 2 cores.
 */
import { before } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { labDown, labTopology, labUp } from "../../src/lab/lab.js";
import { generateKeyFile } from "../../src/channel/key.js";
import { EtcdCluster, etcdSkipReason } from "../../src/api/etcd-cluster-testing.js";
import { createDataDisk } from "../../guest/mkdisk.js";
import { linkDown, restoreLinks } from "../faults/fault-inject.js";
import { writeGuestConfig } from "../tools/guest-fixture.js";
import { runIn } from "../tools/run.js";
import { integrationSkip, preconditionTest } from "../tools/lab-fixture.js";
import { Pair, waitFor, type VmStatusJson } from "../tools/pair-fixture.js";
import { cleanupAlways, stopDaemonsUnder } from "../tools/interrupt.js";

const LAB = labTopology("ctetc");
const skip = integrationSkip() || etcdSkipReason();
const itest = preconditionTest(skip);

let work = "";
let primaryCfg = "";
let secondaryCfg = "";
let pair: Pair;
let etcd: EtcdCluster | undefined;

before(async () => {
  if (skip) return;
  work = mkdtempSync(join(tmpdir(), "colo-etcdpair-"));
  const key = join(work, "colo.key");
  generateKeyFile(key);
  await labUp({ prefix: LAB.prefix });
  const primaryImg = join(work, "primary.img");
  const secondaryImg = join(work, "secondary.img");
  await createDataDisk(primaryImg, 64, { overwrite: true });
  copyFileSync(primaryImg, secondaryImg);
  const common = { name: "etp", ip: `${LAB.guestIp}/24`, mac: "00:16:3e:4c:00:a0", bridge: LAB.hostBridge, extra: "colo.appendfsync=always" };
  primaryCfg = writeGuestConfig({ ...common, dir: join(work, "p"), disk: primaryImg }).cfg;
  secondaryCfg = writeGuestConfig({ ...common, dir: join(work, "s"), disk: secondaryImg }).cfg;
  pair = new Pair(LAB, "etp", join(work, "run"), key);
  etcd = await EtcdCluster.start(3, { netns: LAB.namespaces.lan, host: LAB.arbiterIp });
  pair.useArbiter(etcd.address());
});

cleanupAlways(async () => {
  if (skip || !work) return;
  await restoreLinks(LAB);
  await pair.destroyAll();
  await stopDaemonsUnder(join(work, "run"));
  await etcd?.remove();
  await labDown({ prefix: LAB.prefix });
  rmSync(work, { recursive: true, force: true });
});

const statusOf = (host: string): Promise<VmStatusJson | undefined> => pair.status(host).catch(() => undefined);
const incrValue = async (key = "colo:incr"): Promise<number> => Number((await pair.redis("GET", key).catch(() => "0")) || "0");
/** The value grows by `n` from now on (the load is served). */
const served = async (what: string, n: number, timeoutMs = 120_000): Promise<void> => {
  const from = await incrValue();
  await waitFor(what, async () => (await incrValue()) >= from + n, timeoutMs);
};
const noFailover = async (what: string): Promise<void> => {
  const [p, s] = [await pair.status(pair.h1), await pair.status(pair.h2)];
  assert.equal(p.replication?.mode, "primary", `${what}: ${JSON.stringify(p.replication)}`);
  assert.equal(s.replication?.mode, "secondary", `${what}: ${JSON.stringify(s.replication)}`);
  assert.deepEqual([p.replication?.failovers, s.replication?.failovers], [[], []], what);
};

itest("etcd leases, pair A: a member killed and the majority lost cause no failover; the link cut without a majority fences both sides; the majority back, the secondary takes over", { timeout: 900_000 }, async () => {
  const cluster = etcd;
  assert.ok(cluster);
  await pair.protect(primaryCfg, ["migrate", "--colo"], { secondaryConfig: secondaryCfg });
  const incr = pair.startIncr(900);
  await served("INCRs flow", 20);

  // One member killed (the leader: an election follows): the leases are renewed through the others.
  const leader = await cluster.leader();
  await cluster.kill(leader);
  await served("INCRs go on with the etcd leader dead", 30);
  await noFailover("the leader killed");
  await cluster.restart(leader);

  // The majority lost while the pair is connected: nobody may take over, nobody has to.
  const [a = 0, b = 1] = [0, 1, 2].filter((i) => i !== leader);
  await cluster.kill(a);
  await cluster.kill(b);
  await served("INCRs go on without an etcd majority while the pair is connected", 20);
  await noFailover("the majority lost");

  // Now the link: the primary may not run alone (no lease to mark solo), the secondary may not take over.
  const lastServed = await incrValue();
  await linkDown(LAB, pair.h1);
  let seen: VmStatusJson | undefined;
  await waitFor(
    () => `h1 fenced: ${JSON.stringify(seen?.replication)}\n${pair.logTails()}`,
    async () => (seen = await statusOf(pair.h1))?.replication?.mode === "fenced",
    60_000,
  );
  const fenced = await pair.status(pair.h1);
  assert.equal(fenced.state, "paused", "a fenced primary's guest is paused: it releases nothing");
  const waiting = await statusOf(pair.h2);
  assert.notEqual(waiting?.replication?.mode, "unprotected", "the secondary did not take over without a lease");
  // Neither side answers the client now (bounded: the secondary gives up its takeover after 60 s without a lease).
  const asked = await runIn(pair.client, "redis-cli", ["-h", pair.ip, "GET", "colo:incr"], { timeoutMs: 5_000 });
  assert.ok(asked.code !== 0 || !/^\d+$/.test(asked.stdout.trim()), `no side serves while the pair is cut and etcd has no majority: ${JSON.stringify(asked)}`);

  // The majority back: the fenced primary's key ran out, the secondary's takeover is granted.
  await cluster.restart(a);
  await cluster.restart(b);
  await waitFor(
    () => `h2 took over: ${JSON.stringify(seen?.replication)}\n${pair.logTails()}`,
    async () => (seen = await statusOf(pair.h2))?.replication?.mode === "unprotected",
    90_000,
  );
  assert.equal((await pair.status(pair.h1)).replication?.mode, "fenced", "the fenced side stays fenced");
  const s = await incr.result();
  const value = await incrValue();
  assert.equal(s.gaps, 0, "one copy answered at any time: every INCR reply is the previous plus one");
  assert.ok(s.last !== null && s.last >= lastServed - 1, `the client was served up to the cut: ${s.last} vs ${lastServed}`);
  // The INCR in flight at the cut may have been executed by the SVM: the survivor holds the last acknowledged value or one more.
  assert.ok(value === s.last || value === s.last + 1, `no acknowledged write lost: the survivor holds ${value}, the client's last ${s.last}`);
  await restoreLinks(LAB);
});

itest("etcd leases, pair B: the link cut (primary alone, secondary steps down), the secondary killed, the primary killed: always one copy serving, no write lost", { timeout: 900_000 }, async () => {
  await restoreLinks(LAB);
  await pair.protect(primaryCfg, ["migrate", "--colo"], { secondaryConfig: secondaryCfg });
  const incr = pair.startIncr(900);
  await served("INCRs flow", 20);

  // The link cut, both alive: the primary holds its lease and runs alone; the secondary is refused and steps down.
  await linkDown(LAB, pair.h1);
  await waitFor("h1 runs alone", async () => (await statusOf(pair.h1))?.replication?.mode === "unprotected", 60_000);
  await waitFor("h2 stepped down (its copy discarded)", async () => (await statusOf(pair.h2)) === undefined, 120_000);
  await served("INCRs go on on h1 alone", 20);
  await restoreLinks(LAB);

  // Protected again, with --reprotect: the secondary killed, the primary runs alone and asks h2 again.
  await pair.listenSecondary("h2");
  const p = await pair.colo(pair.h1, ["protect", "etp", LAB.replIps[1], "--key-file", pair.keyFile, "-C", secondaryCfg, "--reprotect", LAB.replIps[1], ...pair.arbiterArgs()]);
  assert.equal(p.code, 0, p.stderr);
  await served("INCRs flow protected again", 20);
  process.kill((await pair.status(pair.h2)).pid, "SIGKILL");
  await waitFor("h1 alone after its secondary died", async () => (await statusOf(pair.h1))?.replication?.mode === "unprotected", 60_000);
  await served("INCRs go on on h1 alone", 20);
  await pair.listenSecondary("h2");
  await waitFor("h1 protected itself again (--reprotect)", async () => (await statusOf(pair.h1))?.reprotect?.state === "protected", 240_000);
  assert.equal((await pair.status(pair.h2)).replication?.mode, "secondary");
  await served("INCRs flow protected again", 20);

  // The primary killed: the secondary takes over once the dead primary's etcd lease ran out.
  process.kill((await pair.status(pair.h1)).pid, "SIGKILL");
  await waitFor("h2 took over", async () => (await statusOf(pair.h2))?.replication?.mode === "unprotected", 60_000);
  await served("INCRs go on on the survivor", 20);

  const s = await incr.result();
  assert.deepEqual(s.errors, []);
  assert.equal(s.connectionResets, 0);
  assert.equal(s.gaps, 0, "every INCR reply is the previous plus one");
  assert.equal(await incrValue(), s.last, "the last acknowledged write is the dataset's value");
});
