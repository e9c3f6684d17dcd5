/**
 * EtcdArbiter against a real 3-member etcd cluster (etcd-cluster-testing.ts:
 * Debian's etcd-server, in a network namespace of its own, loopback only),
 * its clients in a driver process inside that namespace
 * (etcd-driver-testing.ts). Skipped, with the reason, only without root or
 * without the etcd binary.
 *
 * Bounds are generous (the machine may be busy) but every wait is for an
 * event: an answer, a grant, a member's /health, a keeper's expiry.
 */
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { checkLeaseRule, checkOneWinner, realClockHarness } from "../colo/lease-rule-testing.js";
import { LEASE_SAFETY_MARGIN_MS, LeaseKeeper, type Arbiter } from "../colo/lease.js";
import { monotonicMs } from "../sys/clock.js";
import { cleanupAlways } from "../../test/tools/interrupt.js";
import { EtcdCluster, etcdSkipReason } from "./etcd-cluster-testing.js";
import type { RemoteArbiter } from "./etcd-driver-testing.js";
import { ETCD_EXPIRY_LAG_MS, ETCD_OPERATION_TIMEOUT_MS } from "./etcd-arbiter.js";

const skip = etcdSkipReason();
const TTL_MS = 1000;
/** etcd grants at least its minimum TTL: 2 s with its default timing (1.5 election timeouts, rounded up to a second). */
const SERVER_TTL_MS = 2000;
/** A key vanishes up to 500 ms after its etcd lease ran out (etcd's expiry loop); more for a busy machine. */
const EXPIRY_SLACK_MS = 2000;
/** A failing call answers within the client's bound; this much more for timer lateness and the driver's pipe. */
const ANSWER_SLACK_MS = 300;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string | (() => string), cond: () => boolean | Promise<boolean>, boundMs: number): Promise<number> {
  const t0 = monotonicMs();
  while (!(await cond())) {
    if (monotonicMs() - t0 > boundMs) assert.fail(`${typeof what === "string" ? what : what()}: not within ${boundMs} ms`);
    await sleep(10);
  }
  return monotonicMs() - t0;
}

/** Asks once; the answer, or the error, and how long the driver took. */
async function ask(a: RemoteArbiter, vm: string, holder: string, solo = false): Promise<{ granted: boolean; error?: string; ms: number }> {
  try {
    const r = await a.acquire(vm, holder, TTL_MS, solo);
    return { granted: r.granted, ms: a.last?.ms ?? NaN };
  } catch (err) {
    return { granted: false, error: (err as Error).message, ms: a.last?.ms ?? NaN };
  }
}

describe("etcd as the lease holder", { skip }, () => {
  let cluster: EtcdCluster;
  cleanupAlways(() => cluster?.remove());
  let clients = 0;
  const open = (address = cluster.address()) => cluster.driver.arbiter(`c${++clients}`, address);
  const perHolder = new Map<string, RemoteArbiter>();
  const holderClient = async (holder: string) => {
    let c = perHolder.get(holder);
    if (!c) perHolder.set(holder, (c = await open()));
    return c;
  };

  before(async () => {
    const t0 = monotonicMs();
    cluster = await EtcdCluster.start(3);
    console.log(`# etcd: 3 members healthy in ${Math.round(monotonicMs() - t0)} ms (netns ${cluster.netns})`);
  });

  test("the lease rule's table (as LeaseTable's unit test), one client per holder; of 8 racing holders exactly one wins", async () => {
    for (const h of ["p", "s", "x", "witness-a", "witness-b", ...Array.from({ length: 8 }, (_, i) => `r${i}`)]) await holderClient(h);
    const client = (holder: string): Arbiter => {
      const c = perHolder.get(holder);
      if (!c) throw new Error(`no client for ${holder}`);
      return c;
    };
    const h = realClockHarness(client, TTL_MS, SERVER_TTL_MS + ETCD_EXPIRY_LAG_MS, SERVER_TTL_MS + EXPIRY_SLACK_MS + 5000);
    const t0 = monotonicMs();
    await checkLeaseRule(h, "own-");
    for (let round = 0; round < 5; round++) await checkOneWinner(h, `race-${round}`, Array.from({ length: 8 }, (_, i) => `r${i}`));
    console.log(`# etcd: lease rule table + 5 races of 8 in ${Math.round(monotonicMs() - t0)} ms`);
  });

  test("the lease rule's table with one client for every holder (the client keeps holders apart)", async () => {
    const shared = await open();
    await checkLeaseRule(realClockHarness(() => shared, TTL_MS, SERVER_TTL_MS + ETCD_EXPIRY_LAG_MS, SERVER_TTL_MS + EXPIRY_SLACK_MS + 5000), "shared-");
  });

  test("acquire, renew, release; the other holder is refused while one holds; a lease not renewed lets the other take it", async () => {
    const p = await open();
    const s = await open();
    assert.deepEqual(await p.acquire("web", "p", TTL_MS, false), { granted: true, solo: false, holder: "p", remainingMs: TTL_MS });
    const refused = await s.acquire("web", "s", TTL_MS, false);
    assert.deepEqual({ ...refused, remainingMs: 0 }, { granted: false, solo: false, holder: "p", remainingMs: 0 });
    assert.ok(refused.remainingMs > 0 && refused.remainingMs <= SERVER_TTL_MS + ETCD_EXPIRY_LAG_MS, `remaining ${refused.remainingMs} ms`);
    for (let i = 0; i < 5; i++) assert.equal((await p.acquire("web", "p", TTL_MS, false)).granted, true, "renewed");
    await p.release("web", "p");
    assert.equal((await s.acquire("web", "s", TTL_MS, false)).granted, true, "released: the other side gets it at once");
    // s stops renewing: p gets it once s's etcd lease ran out, never before s's own view of it ended.
    const lastRenewal = monotonicMs();
    assert.equal((await s.acquire("web", "s", TTL_MS, false)).granted, true);
    const waited = await until("p granted after s's lease ran out", async () => (await p.acquire("web", "p", TTL_MS, false)).granted, SERVER_TTL_MS + EXPIRY_SLACK_MS + 5000);
    const sinceRenewal = monotonicMs() - lastRenewal;
    console.log(`# etcd: a ${TTL_MS} ms lease not renewed was taken over ${Math.round(sinceRenewal)} ms after its last renewal`);
    assert.ok(sinceRenewal >= TTL_MS - LEASE_SAFETY_MARGIN_MS, `not before the holder's own view ended (${sinceRenewal} ms)`);
    assert.ok(waited > 0);
    await p.release("web", "p");
  });

  test("takeover (acquireForTakeover, in the client's process): after a dead primary's lease ran out; refused at once when solo; refused when the primary renews", async () => {
    const [pa, sa] = [await open(), await open()];
    // Dead primary: it took the lease once and never renewed.
    const primary = new LeaseKeeper(pa, "db", "primary", TTL_MS, () => undefined);
    assert.equal(await primary.tryAcquire(), true);
    const t0 = monotonicMs();
    const s1 = await sa.takeover("s1", "db", "secondary", TTL_MS, 30_000);
    const waited = monotonicMs() - t0;
    assert.equal(s1.taken, true, s1.lastError);
    console.log(`# etcd: takeover from a dead primary after ${Math.round(waited)} ms (ttl ${TTL_MS} ms, etcd lease ${SERVER_TTL_MS} ms)`);
    assert.ok(waited >= TTL_MS - LEASE_SAFETY_MARGIN_MS && waited < SERVER_TTL_MS + EXPIRY_SLACK_MS, `waited ${waited} ms`);
    assert.equal(s1.solo, true, "the survivor runs alone");
    // The survivor's solo lease: a later takeover attempt (the old primary back) is refused at once.
    const late = await pa.takeover("late", "db", "primary", TTL_MS, 30_000);
    assert.equal(late.taken, false);
    assert.equal(late.refusedSolo, true);
    assert.ok(late.ms < 1000, `a solo refusal is final: no waiting (${late.ms} ms)`);
    await cluster.driver.request("keeper-stop", { keeper: "s1", release: true });
    // A live primary keeps renewing (link cut, not solo): the secondary sees the renewals and steps down.
    const live = new LeaseKeeper(pa, "db", "primary", TTL_MS, () => undefined);
    assert.equal(await live.tryAcquire(), true);
    live.keep();
    const s2 = await sa.takeover("s2", "db", "secondary", TTL_MS, 30_000);
    assert.equal(s2.taken, false);
    assert.equal(s2.refusedSolo, false);
    assert.ok(s2.ms < 3000, `a renewal is seen within a few renewal periods (${Math.round(s2.ms)} ms)`);
    await live.stop(true);
  });

  test("wrong or unreachable endpoints: an error (or no grant) within the bound, never a hang; a dead endpoint in the list is passed over", async () => {
    const silent = Number((await cluster.driver.request("silent-listener")).port);
    const http1 = Number((await cluster.driver.request("http1-listener")).port);
    const cases: [string, string, RegExp][] = [
      ["nothing listening", "etcd://127.0.0.1:1", /127\.0\.0\.1:1: .*(UNAVAILABLE|ECONNREFUSED|No connection)/],
      ["a silent TCP peer", `etcd://127.0.0.1:${silent}`, /127\.0\.0\.1:\d+: no answer within 250 ms/],
      ["an HTTP/1.1 server", `etcd://127.0.0.1:${http1}`, new RegExp(`127\\.0\\.0\\.1:${http1}: `)],
      ["all three", `etcd://127.0.0.1:1,127.0.0.1:${silent},127.0.0.1:${http1}`, /127\.0\.0\.1:1: .*; 127\.0\.0\.1:\d+: /],
    ];
    for (const [what, address, why] of cases) {
      const c = await open(address);
      for (let i = 0; i < 3; i++) {
        const r = await ask(c, "web2", "p");
        assert.equal(r.granted, false, what);
        assert.ok(r.error, `${what}: rejected`);
        assert.match(r.error, new RegExp(address.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")), `${what}: the error names the cluster`);
        assert.match(r.error, why, what);
        assert.ok(r.ms <= ETCD_OPERATION_TIMEOUT_MS + ANSWER_SLACK_MS, `${what}: answered in ${r.ms} ms`);
      }
      await c.release("web2", "p").then(
        () => assert.fail(`${what}: release should fail`),
        (err: Error) => assert.match(err.message, /etcd:\/\//),
      );
    }
    const mixed = await open(`etcd://127.0.0.1:1,127.0.0.1:${silent},${cluster.address([0]).slice("etcd://".length)}`);
    for (let i = 0; i < 5; i++) {
      const r = await ask(mixed, "web2", "p");
      assert.equal(r.granted, true, `a good member after two bad ones: ${r.error}`);
      assert.ok(r.ms <= ETCD_OPERATION_TIMEOUT_MS, `${r.ms} ms`);
    }
    await mixed.release("web2", "p");
  });

  test("a key under colo's prefix that colo did not write: no grant, an error naming the key; once it reads as a lease, the rule applies", async () => {
    const c = await open();
    const put = async (value: string) => assert.equal((await cluster.driver.request("put-raw", { address: cluster.address(), key: "/colo/lease/foreign", value })).error, undefined);
    await put("not a lease");
    const r = await ask(c, "foreign", "p");
    assert.equal(r.granted, false);
    assert.match(r.error ?? "", /key \/colo\/lease\/foreign holds a value colo did not write \("not a lease"\): no lease is granted/);
    await put(JSON.stringify({ holder: "p", solo: false, ttlMs: 1000, serverTtlMs: 2000 })); // now it reads as p's lease (no etcd lease: it stays)
    assert.equal((await ask(c, "foreign", "p")).granted, true, "p renews what reads as its own lease");
    await c.release("foreign", "p");
  });

  test("a live migration's handover decided through etcd (handover.ts decideAt): one side wins the key, the other loses, for good", async () => {
    const decide = (holder: string) => cluster.driver.request("decide-at", { address: cluster.address(), key: "vm@handover:test", holder });
    const [a, b] = await Promise.all([decide("source@vm"), decide("destination@vm")]);
    assert.deepEqual([a.verdict, b.verdict].sort(), ["lost", "won"], `${a.detail} / ${b.detail}`);
    const winner = a.verdict === "won" ? "source@vm" : "destination@vm";
    const loser = winner === "source@vm" ? "destination@vm" : "source@vm";
    assert.equal((await decide(winner)).verdict, "won", "the winner asking again still wins");
    assert.equal((await decide(loser)).verdict, "lost", "the loser never gets it");
    const bad = await cluster.driver.request("decide-at", { address: "etcd://:1", key: "k", holder: "h" });
    assert.equal(bad.verdict, "unknown", "a bad address decides nothing");
  });

  test("one member killed (a follower, then the leader): grants go on; the other holder is never granted meanwhile", async () => {
    const p = await open();
    const s = await open();
    const keeper = new LeaseKeeper(p, "svc", "p", TTL_MS, () => undefined);
    assert.equal(await keeper.tryAcquire(), true);
    keeper.keep();
    const leader = await cluster.leader();
    const follower = [0, 1, 2].find((i) => i !== leader) ?? 0;
    await cluster.kill(follower);
    const before = keeper.status();
    await until("6 renewals with a follower dead", () => keeper.status().renewals >= before.renewals + 6, 30_000);
    assert.equal(keeper.status().failures, before.failures, "no renewal failed with one follower dead");
    assert.equal((await ask(s, "svc", "s")).granted, false);
    await cluster.restart(follower);
    // The leader: renewals stop for an election, then go on.
    const t0 = monotonicMs();
    await cluster.kill(leader);
    const killedAt = keeper.status();
    const resumed = await until("a renewal after the leader's death", () => keeper.status().renewals >= killedAt.renewals + 3, 30_000);
    const failures = keeper.status().failures - killedAt.failures;
    console.log(`# etcd: leader killed: renewals went on ${Math.round(resumed)} ms later (${failures} failed meanwhile; new leader ${await cluster.leader()})`);
    assert.equal((await ask(s, "svc", "s")).granted, false, "the holder renews: the other is refused");
    await keeper.stop(true);
    assert.equal((await ask(s, "svc", "s")).granted, true);
    await s.release("svc", "s");
    await cluster.restart(leader);
    assert.ok(monotonicMs() - t0 > 0);
  });

  test("a dead primary, and the etcd leader killed while the secondary waits: the key outlives its estimate, the takeover still comes", async () => {
    const [pa, sa] = [await open(), await open()];
    const primary = new LeaseKeeper(pa, "dbl", "primary", TTL_MS, () => undefined);
    assert.equal(await primary.tryAcquire(), true); // then it dies
    const t0 = monotonicMs();
    const takeover = sa.takeover("dbl", "dbl", "secondary", TTL_MS, 60_000);
    await until("the secondary's first refusal", () => cluster.driver.events.some((e) => e.event === "refused" && e.keeper === "dbl"), 10_000);
    const leader = await cluster.leader();
    await cluster.kill(leader); // the new leader extends every lease: the key stays past the refusals' estimated end
    const r = await takeover;
    const waited = monotonicMs() - t0;
    assert.equal(r.taken, true, `taken over, not stepped down (${r.lastError})`);
    console.log(`# etcd: dead primary + leader killed during the wait: taken over after ${Math.round(waited)} ms (last refusal: ${r.lastError})`);
    assert.ok(waited >= TTL_MS - LEASE_SAFETY_MARGIN_MS, `${waited} ms`);
    await cluster.driver.request("keeper-stop", { keeper: "dbl", release: true });
    await cluster.restart(leader);
  });

  test("majority killed: no grant to either side, each answer within the bound; the holder's lease expires; grants return with the members", async () => {
    const p = await open();
    const s = await open();
    let expired = 0;
    const keeper = new LeaseKeeper(p, "job", "p", TTL_MS, () => expired++);
    assert.equal(await keeper.tryAcquire(), true);
    keeper.keep();
    await until("a renewal", () => keeper.status().renewals >= 3, 10_000);
    const t0 = monotonicMs();
    // A renewal may have come late before the kill on a loaded machine (an expiry, then renewed again): count from here.
    const expiredBefore = expired;
    await cluster.kill(1);
    await cluster.kill(2);
    const lapse = await until(() => `the holder's lease expired (expiries before the kill ${expiredBefore}, now ${expired}; ${JSON.stringify(keeper.status())})`, () => expired > expiredBefore, TTL_MS + 5000);
    console.log(`# etcd: 2 of 3 members killed: the holder's lease ran out ${Math.round(lapse)} ms later (ttl ${TTL_MS} ms)`);
    assert.equal(keeper.held(), false);
    for (const [who, c, solo] of [["holder", p, false], ["holder, solo", p, true], ["other", s, false], ["other, takeover", s, true]] as const) {
      for (let i = 0; i < 3; i++) {
        const r = await ask(c, "job", who.startsWith("holder") ? "p" : "s", solo);
        assert.equal(r.granted, false, `${who}: not granted without a quorum`);
        assert.ok(r.ms <= ETCD_OPERATION_TIMEOUT_MS + ANSWER_SLACK_MS, `${who}: answered in ${r.ms} ms (${r.error})`);
      }
    }
    const takeover = await s.takeover("job", "job", "s", TTL_MS, 3000);
    assert.equal(takeover.taken, false, "no takeover without a quorum");
    assert.ok(takeover.ms < 3000 + ETCD_OPERATION_TIMEOUT_MS + ANSWER_SLACK_MS, `it gave up at its bound (${takeover.ms} ms)`);
    await cluster.driver.request("keeper-stop", { keeper: "job" });
    assert.equal(expired, expiredBefore + 1, "expiry fires once");
    await cluster.restart(1);
    await cluster.restart(2);
    const back = await until("the holder's renewals granted again", () => keeper.held(), 30_000);
    console.log(`# etcd: members back: renewed ${Math.round(back)} ms after they were healthy (${Math.round(monotonicMs() - t0)} ms after the kill)`);
    assert.equal((await ask(s, "job", "s")).granted, false, "and the other side is refused again");
    await keeper.stop(true);
  });
  test("no unhandled rejection in the clients, whatever the cluster did", () => {
    assert.deepEqual(cluster.driver.unhandled, []);
  });
});
