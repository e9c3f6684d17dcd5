/**
 * Tests only: the split-brain rule (lease.ts) as one table of cases that
 * any `Arbiter` runs — LeaseTable's own cases (lease.test.ts), asked
 * through the Arbiter interface, so the built-in arbiter (in memory and over
 * its network protocol) and etcd (src/api/etcd-arbiter.ts) are held to the
 * same semantics: holder, ttl, solo.
 *
 * Time differs between arbiters: a fake clock is moved, a real arbiter is
 * waited for (an event: asked until it grants, never a fixed sleep). The
 * runner checks on the harness's clock that no other holder is granted
 * before the last holder's own view of its lease (ttl - margin from its
 * request) has ended.
 */
import assert from "node:assert/strict";
import { monotonicMs } from "../sys/clock.js";
import { LEASE_SAFETY_MARGIN_MS, LeaseTable, type Arbiter, type LeaseAnswer } from "./lease.js";

export interface LeaseRuleHarness {
  /** The client `holder` asks through (one for all, or one each). */
  arbiter(holder: string): Arbiter;
  /** The ttl every lease of the table is asked for. */
  readonly ttlMs: number;
  /** The clock the holders count on (a fake one, or monotonicMs). */
  now(): number;
  /** Asks (`ask`) until granted: a fake clock moves past the ttl first; a real arbiter is asked again until it grants, within a bound. */
  untilGranted(ask: () => Promise<LeaseAnswer>): Promise<LeaseAnswer>;
  /** A refusal's remainingMs is at most this (an arbiter may count a longer lease than the ttl: etcd's whole seconds). */
  readonly maxRemainingMs: number;
}

type Ask = { holder: string; vm: string; solo: boolean };
type Expect = { granted: boolean; solo: boolean; holder: string };

/** One row: ask (and what the answer must be), ask once the lease ran out, outlast every unrenewed lease, or release. */
export type LeaseStep =
  | { what: string; ask: Ask; expect: Expect }
  | { what: string; askOnceExpired: Ask; expect: Expect }
  | { what: string; outlast: true }
  | { what: string; release: { holder: string; vm: string } };

const ask = (holder: string, vm: string, solo = false): Ask => ({ holder, vm, solo });
const granted = (holder: string, solo = false): Expect => ({ granted: true, solo, holder });
const refused = (holder: string, solo = false): Expect => ({ granted: false, solo, holder });

/** LeaseTable's unit test (lease.test.ts), row by row, plus a holder taking back its own lapsed lease. */
export const LEASE_RULE: readonly LeaseStep[] = [
  { what: "p takes the lease", ask: ask("p", "vm"), expect: granted("p") },
  { what: "s is refused while p holds it", ask: ask("s", "vm"), expect: refused("p") },
  { what: "the holder renews", ask: ask("p", "vm"), expect: granted("p") },
  { what: "s is still refused after the renewal", ask: ask("s", "vm"), expect: refused("p") },
  { what: "expired: the other side may take it (not before p's view ended)", askOnceExpired: ask("s", "vm"), expect: granted("s") },
  { what: "s marks it solo", ask: ask("s", "vm", true), expect: granted("s", true) },
  { what: "renewals carry the mark", ask: ask("s", "vm", true), expect: granted("s", true) },
  { what: "s stops renewing: longer than any lease", outlast: true },
  { what: "solo: even expired, nobody else gets it", ask: ask("p", "vm"), expect: refused("s", true) },
  { what: "a release by another holder has no effect", release: { holder: "p", vm: "vm" } },
  { what: "still refused, still solo", ask: ask("p", "vm"), expect: refused("s", true) },
  { what: "the holder itself may clear the mark (a new session)", ask: ask("s", "vm", false), expect: granted("s", false) },
  { what: "and set it again", ask: ask("s", "vm", true), expect: granted("s", true) },
  { what: "the holder releases it", release: { holder: "s", vm: "vm" } },
  { what: "then another holder gets it", ask: ask("p", "vm"), expect: granted("p") },
  { what: "leases are per VM", ask: ask("x", "other"), expect: granted("x") },
  { what: "the other VM's lease is x's", ask: ask("s", "other"), expect: refused("x") },
  { what: "p stops renewing", outlast: true },
  { what: "p takes its own lapsed lease back (nobody took it)", ask: ask("p", "vm"), expect: granted("p") },
  { what: "p gives it back", release: { holder: "p", vm: "vm" } },
  { what: "x gives the other back", release: { holder: "x", vm: "other" } },
];

/** Runs LEASE_RULE on `h`; `vmPrefix` keeps runs on one arbiter apart. */
export async function checkLeaseRule(h: LeaseRuleHarness, vmPrefix = ""): Promise<void> {
  const lastGrantSent = new Map<string, { holder: string; at: number }>();
  let witnesses = 0;
  const send = async (a: Ask, row: string): Promise<LeaseAnswer> => {
    const at = h.now();
    const answer = await h.arbiter(a.holder).acquire(vmPrefix + a.vm, a.holder, h.ttlMs, a.solo);
    if (answer.granted) {
      const before = lastGrantSent.get(a.vm);
      if (before && before.holder !== a.holder) {
        // The rule: never granted to another before the last holder's own view (from its request, ttl - margin) ended.
        assert.ok(h.now() >= before.at + h.ttlMs - LEASE_SAFETY_MARGIN_MS, `${row}: granted to ${a.holder} ${h.now() - before.at} ms after ${before.holder}'s request`);
      }
      lastGrantSent.set(a.vm, { holder: a.holder, at });
    }
    return answer;
  };
  for (const step of LEASE_RULE) {
    const row = `row "${step.what}"`;
    if ("release" in step) {
      await h.arbiter(step.release.holder).release(vmPrefix + step.release.vm, step.release.holder);
      if (lastGrantSent.get(step.release.vm)?.holder === step.release.holder) lastGrantSent.delete(step.release.vm);
      continue;
    }
    if ("outlast" in step) {
      // A witness lease of the same ttl, taken now and never renewed, has run out: so has any lease not renewed since.
      const w = `${vmPrefix}witness-${++witnesses}`;
      assert.equal((await h.arbiter("witness-a").acquire(w, "witness-a", h.ttlMs, false)).granted, true, `${row}: the witness's lease`);
      const b = await h.untilGranted(() => h.arbiter("witness-b").acquire(w, "witness-b", h.ttlMs, false));
      assert.equal(b.granted, true, `${row}: the witness's lease ran out`);
      await h.arbiter("witness-b").release(w, "witness-b");
      continue;
    }
    const a = "ask" in step ? step.ask : step.askOnceExpired;
    const answer = "ask" in step ? await send(a, row) : await h.untilGranted(() => send(a, row));
    assert.deepEqual({ granted: answer.granted, solo: answer.solo, holder: answer.holder }, step.expect, row);
    if (answer.granted) assert.equal(answer.remainingMs, h.ttlMs, `${row}: a grant runs the ttl asked`);
    else assert.ok(answer.remainingMs >= 0 && answer.remainingMs <= h.maxRemainingMs, `${row}: remainingMs ${answer.remainingMs}`);
  }
}

/** `holders` ask for a free lease all at once: exactly one gets it, every refusal names it; it is released after. */
export async function checkOneWinner(h: LeaseRuleHarness, vm: string, holders: readonly string[]): Promise<string> {
  const answers = await Promise.all(holders.map((holder) => h.arbiter(holder).acquire(vm, holder, h.ttlMs, false)));
  const winners = answers.filter((a) => a.granted).map((a) => a.holder);
  assert.equal(winners.length, 1, `exactly one of ${holders.length} holders is granted a free lease (granted: ${winners.join(", ")})`);
  const winner = winners[0] ?? "";
  for (const a of answers) assert.equal(a.holder, winner, "every answer names the one holder");
  await h.arbiter(winner).release(vm, winner);
  return winner;
}

/** A harness over a LeaseTable on a fake clock: the arbiter the rule is written for. */
export function leaseTableHarness(ttlMs = 1000): LeaseRuleHarness {
  const table = new LeaseTable();
  let now = 1_000_000;
  const arbiter: Arbiter = {
    acquire: (vm, holder, ttl, solo) => Promise.resolve(table.acquire(vm, holder, ttl, now, solo)),
    release: (vm, holder) => Promise.resolve(table.release(vm, holder)),
    close: () => undefined,
  };
  return fakeClockHarness(() => arbiter, ttlMs, () => now, (ms) => (now += ms));
}

/** A harness whose clock a test moves (`advance`); `arbiter` must count on the same clock. */
export function fakeClockHarness(arbiter: (holder: string) => Arbiter, ttlMs: number, now: () => number, advance: (ms: number) => void): LeaseRuleHarness {
  return {
    arbiter,
    ttlMs,
    now,
    untilGranted: async (ask) => {
      advance(ttlMs);
      return ask();
    },
    maxRemainingMs: ttlMs,
  };
}

/** A harness on the real monotonic clock: `untilGranted` asks every `pollMs` for at most `boundMs`. */
export function realClockHarness(arbiter: (holder: string) => Arbiter, ttlMs: number, maxRemainingMs: number, boundMs: number, pollMs = 20): LeaseRuleHarness {
  return {
    arbiter,
    ttlMs,
    now: monotonicMs,
    untilGranted: async (ask) => {
      const deadline = monotonicMs() + boundMs;
      for (;;) {
        const a = await ask();
        if (a.granted || monotonicMs() >= deadline) return a;
        await new Promise((r) => setTimeout(r, pollMs));
      }
    },
    maxRemainingMs,
  };
}
