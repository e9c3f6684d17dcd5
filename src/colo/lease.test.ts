import assert from "node:assert/strict";
import { test } from "node:test";
import { monotonicMs, type Clock } from "../sys/clock.js";
import { steppedWallClock } from "../sys/clock-testing.js";
import { acquireForTakeover, LEASE_SAFETY_MARGIN_MS, LeaseKeeper, LeaseTable, type Arbiter, type LeaseAnswer } from "./lease.js";
import { checkLeaseRule, checkOneWinner, leaseTableHarness } from "./lease-rule-testing.js";

test("lease table: one holder at a time; expiry frees it; a solo lease is never handed over", () => {
  const t = new LeaseTable();
  assert.equal(t.acquire("vm", "p", 1000, 0).granted, true);
  assert.deepEqual(t.acquire("vm", "s", 1000, 500), { granted: false, solo: false, holder: "p", remainingMs: 500 });
  assert.equal(t.acquire("vm", "p", 1000, 900).granted, true, "the holder renews");
  assert.equal(t.acquire("vm", "s", 1000, 1800).granted, false);
  assert.equal(t.acquire("vm", "s", 1000, 1900).granted, true, "expired: the other side may take it");
  // Solo: its holder ran alone; even expired, nobody else gets it.
  assert.equal(t.acquire("vm", "s", 1000, 2000, true).solo, true);
  assert.equal(t.acquire("vm", "s", 1000, 2100, true).solo, true, "renewals carry the mark");
  assert.deepEqual(t.acquire("vm", "p", 1000, 99_999), { granted: false, solo: true, holder: "s", remainingMs: 0 });
  t.release("vm", "p"); // not the holder: no effect
  assert.equal(t.acquire("vm", "p", 1000, 99_999).granted, false);
  // The holder itself may clear the mark (a new session: its new secondary starts from checkpoint 0).
  assert.equal(t.acquire("vm", "s", 1000, 100_000, false).solo, false);
  assert.equal(t.acquire("vm", "s", 1000, 100_001, true).solo, true);
  t.release("vm", "s");
  assert.equal(t.acquire("vm", "p", 1000, 99_999).granted, true);
  assert.equal(t.acquire("other", "x", 10, 0).granted, true, "leases are per VM");
});

test("lease table: a holder whose connection closed frees its lease at once, unless solo; its renewal over a new one holds it again", () => {
  const t = new LeaseTable();
  assert.equal(t.acquire("vm", "p", 1000, 0).granted, true);
  assert.equal(t.holderDisconnected("vm", "x"), false, "not the holder: no effect");
  assert.equal(t.acquire("vm", "s", 1000, 10).granted, false);
  assert.equal(t.holderDisconnected("vm", "p"), true);
  assert.equal(t.acquire("vm", "s", 1000, 20, true).granted, true, "the dead holder's 980 ms left do not count");
  assert.equal(t.acquire("vm", "p", 1000, 30).granted, false, "the old holder, back, is refused: it must not act alone");
  // Solo: the holder ran alone; its connection closing does not free it.
  assert.equal(t.holderDisconnected("vm", "s"), false);
  assert.equal(t.acquire("vm", "p", 1000, 5000).granted, false, "solo, even expired");
  // Renewed over a new connection after the close: held as before.
  const u = new LeaseTable();
  u.acquire("vm", "p", 1000, 0);
  u.holderDisconnected("vm", "p");
  assert.equal(u.acquire("vm", "p", 1000, 100).granted, true);
  assert.equal(u.acquire("vm", "s", 1000, 200).granted, false, "renewed: the flag is gone");
});

test("lease rule table (lease-rule-testing.ts, also run on the network arbiter and etcd): LeaseTable through the Arbiter interface", async () => {
  const h = leaseTableHarness(1000);
  await checkLeaseRule(h);
  assert.equal(await checkOneWinner(h, "race", ["a", "b", "c", "d"]), "a", "the first request wins");
});

/** An arbiter over a LeaseTable on a monotonic clock (the real one unless a test gives its own), which can be cut off. */
class TableArbiter implements Arbiter {
  readonly table = new LeaseTable();
  reachable = true;
  constructor(private readonly now: Clock = monotonicMs) {}
  acquire(vm: string, holder: string, ttlMs: number, solo: boolean): Promise<LeaseAnswer> {
    if (!this.reachable) return Promise.reject(new Error("arbiter unreachable"));
    return Promise.resolve(this.table.acquire(vm, holder, ttlMs, this.now(), solo));
  }
  release(vm: string, holder: string): Promise<void> {
    this.table.release(vm, holder);
    return Promise.resolve();
  }
  close(): void {}
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("lease keeper: renews while the arbiter answers; expires (once) when it does not", async (t) => {
  const arbiter = new TableArbiter();
  let expired = 0;
  const k = new LeaseKeeper(arbiter, "vm", "p", 300, () => expired++);
  t.after(() => k.stop(false)); // a failed assertion must not leave it renewing (the file would never end)
  assert.equal(await k.tryAcquire(), true);
  k.keep();
  await sleep(700);
  assert.equal(k.held(), true, "renewed past its first ttl");
  assert.equal(expired, 0);
  arbiter.reachable = false;
  // Waited for, not slept: the expiry timer may run late on a loaded machine.
  const deadline = monotonicMs() + 10_000;
  while (expired === 0 && monotonicMs() < deadline) await sleep(20);
  assert.equal(k.held(), false);
  assert.equal(expired, 1);
  await sleep(400); // more than the ttl again: still once
  assert.equal(expired, 1, "expires once");
  assert.ok(k.status().failures > 0);
  await k.stop(false);
});

test("takeover: the secondary gets the lease only after a dead primary's lease ran out", async () => {
  const arbiter = new TableArbiter();
  const primary = new LeaseKeeper(arbiter, "vm", "p", 300, () => undefined);
  assert.equal(await primary.tryAcquire(), true);
  // The primary dies (stops renewing) now.
  const secondary = new LeaseKeeper(arbiter, "vm", "s", 300, () => undefined);
  const t0 = monotonicMs();
  assert.equal(await acquireForTakeover(secondary, 2000, 20), true);
  assert.ok(monotonicMs() - t0 >= 200, "not before the primary's lease ran out");
  assert.equal(secondary.status().solo, true, "the survivor runs alone");
});

test("takeover refused: a live primary marked its lease solo when it lost its secondary", async () => {
  const arbiter = new TableArbiter();
  const primary = new LeaseKeeper(arbiter, "vm", "p", 300, () => undefined);
  assert.equal(await primary.tryAcquire(), true);
  primary.keep();
  assert.equal(await primary.markSolo(), true);
  const secondary = new LeaseKeeper(arbiter, "vm", "s", 300, () => undefined);
  const t0 = monotonicMs();
  assert.equal(await acquireForTakeover(secondary, 5000, 20), false);
  assert.ok(monotonicMs() - t0 < 1000, "a solo refusal is final: no waiting");
  assert.equal(secondary.refusedSolo, true);
  await primary.stop(true);
});

test("takeover refused: a live primary keeps renewing (link cut, not yet solo): the secondary sees the renewal and steps down", async () => {
  const arbiter = new TableArbiter();
  const primary = new LeaseKeeper(arbiter, "vm", "p", 300, () => undefined);
  assert.equal(await primary.tryAcquire(), true);
  primary.keep();
  const secondary = new LeaseKeeper(arbiter, "vm", "s", 300, () => undefined);
  const t0 = monotonicMs();
  assert.equal(await acquireForTakeover(secondary, 10_000, 20), false);
  assert.ok(monotonicMs() - t0 < 1000, "a renewal is seen within one renewal period, not at the bound");
  assert.equal(secondary.refusedSolo, false);
  await primary.stop(false);
});

test("takeover: the wait follows the dead primary's own ttl, not the secondary's", async () => {
  const arbiter = new TableArbiter();
  const primary = new LeaseKeeper(arbiter, "vm", "p", 800, () => undefined);
  assert.equal(await primary.tryAcquire(), true); // then it dies: no renewal
  const secondary = new LeaseKeeper(arbiter, "vm", "s", 100, () => undefined);
  const t0 = monotonicMs();
  assert.equal(await acquireForTakeover(secondary, 10_000, 20), true);
  const waited = monotonicMs() - t0;
  assert.ok(waited >= 700 && waited < 2000, `waited ${waited} ms for an 800 ms lease`);
});

test("takeover: an arbiter that never answers ends at the bound, without a takeover", async () => {
  const arbiter = new TableArbiter();
  arbiter.reachable = false;
  const secondary = new LeaseKeeper(arbiter, "vm", "s", 100, () => undefined);
  assert.equal(await acquireForTakeover(secondary, 300, 20), false);
  assert.ok(secondary.status().failures > 0);
});

test("lease keeper: the lease is ttl minus the margin from the request, on the keeper's own clock", async () => {
  let now = 5_000;
  const clock = () => now;
  const arbiter = new TableArbiter(clock);
  const k = new LeaseKeeper(arbiter, "vm", "p", 300, () => undefined, clock);
  assert.equal(await k.tryAcquire(), true);
  now += 300 - LEASE_SAFETY_MARGIN_MS - 1;
  assert.equal(k.held(), true);
  assert.equal(k.status().validForMs, 1);
  now += 1;
  assert.equal(k.held(), false, "ends at ttl - margin on the holder's clock");
  assert.equal((await arbiter.acquire("vm", "s", 300, false)).granted, false, "while the arbiter still counts it");
  await k.stop(false);
});

test("a wall-clock step neither ends a lease early nor stretches it: holder and arbiter never read Date", async (t) => {
  const wall = steppedWallClock(t);
  const arbiter = new TableArbiter();
  let expired = 0;
  const primary = new LeaseKeeper(arbiter, "vm", "p", 300, () => expired++);
  const secondary = new LeaseKeeper(arbiter, "vm", "s", 300, () => undefined);
  const t0 = monotonicMs();
  assert.equal(await primary.tryAcquire(), true);
  wall.jump(3_600_000); // an hour ahead
  assert.equal(primary.held(), true, "a step ahead does not end the holder's lease");
  assert.equal(await secondary.tryAcquire(true), false, "nor the arbiter's");
  wall.jump(-7_200_000); // then an hour behind
  await sleep(300 - LEASE_SAFETY_MARGIN_MS + 50);
  assert.equal(primary.held(), false, "a step back does not stretch the holder's lease");
  assert.equal(expired, 1, "its expiry fired on time");
  // The secondary's takeover waits for the arbiter's end of the lease: about the ttl, neither 0 nor an hour.
  assert.equal(await acquireForTakeover(secondary, 2000, 20), true);
  const waited = monotonicMs() - t0;
  assert.ok(waited >= 290 && waited < 1000, `the arbiter freed the lease after ${waited} ms`);
  assert.equal(wall.reads(), 0, "nothing in the lease code read the wall clock");
  await primary.stop(false);
  await secondary.stop(false);
});

test("lease keeper: a renewal that fires while markSolo() waits for its answer carries the mark (it must not clear it on the arbiter)", async () => {
  const table = new LeaseTable();
  const sent: boolean[] = [];
  let release: (() => void) | undefined;
  const arbiter: Arbiter = {
    acquire: async (vm, holder, ttlMs, solo) => {
      sent.push(solo);
      // The solo request's answer is held back until the renewal has been sent (and answered) after it.
      if (solo && release === undefined) await new Promise<void>((r) => (release = r));
      return table.acquire(vm, holder, ttlMs, monotonicMs(), solo);
    },
    release: async () => undefined,
    close: () => undefined,
  };
  const keeper = new LeaseKeeper(arbiter, "web", "primary@h1", 1000, () => undefined);
  assert.equal(await keeper.tryAcquire(false), true);
  const marking = keeper.markSolo();
  const renewal = keeper.tryAcquire(); // what the renewal timer does meanwhile
  assert.equal(await renewal, true);
  release?.();
  assert.equal(await marking, true);
  assert.deepEqual(sent, [false, true, true]);
  assert.equal(table.isSolo("web", "primary@h1"), true, "the arbiter still holds the mark");
  assert.equal(keeper.status().solo, true);
});

test("lease keeper: an expiry timer that fires a moment early (libuv's whole milliseconds) checks again and still expires", async (t) => {
  let now = 1_000;
  const clock = () => now;
  const arbiter = new TableArbiter(clock);
  let expired = 0;
  const k = new LeaseKeeper(arbiter, "vm", "p", 300, () => expired++, clock);
  t.after(() => k.stop(false));
  assert.equal(await k.tryAcquire(), true);
  // The timer is due in 201 ms; when it fires, the keeper's clock has not reached the end yet.
  now += 300 - LEASE_SAFETY_MARGIN_MS - 0.5;
  await sleep(260);
  assert.equal(expired, 0, "not expired while held");
  assert.equal(k.held(), true);
  now += 1;
  await sleep(30); // the re-armed check (1 ms) has run
  assert.equal(k.held(), false);
  assert.equal(expired, 1, "the expiry comes once the lease really ended");
});
