/**
 * The split-brain rule (COLO-PROTOCOL.md §5; issue 7): a side may act
 * alone — release output without a peer — only while it holds the VM's
 * lease from an arbiter, a witness both hosts reach by another path than
 * the replication link.
 *
 * - The primary takes the lease when replication starts and renews it
 *   every ttl/3. When it loses its secondary, before it releases a single
 *   frame the secondary has not matched, it marks the lease **solo** ("I
 *   run alone; the secondary's copy is stale from now on"). If the arbiter
 *   cannot be reached for that, the primary is fenced: held output is
 *   dropped, the VM paused. A solo primary that later loses its lease
 *   (arbiter unreachable past the ttl) is fenced the same way.
 * - The secondary, when the primary falls silent, asks for the lease. It
 *   is granted only once the primary's lease has run out on the arbiter's
 *   clock, or the connection the primary renewed it over has closed (its
 *   process died: the kernel closed its sockets; `colo arbiter` only), and
 *   was never marked solo; then the secondary takes over (and
 *   holds the lease solo itself). A solo lease is never granted to another
 *   holder: the secondary steps down and discards its copy — taking over
 *   from a copy that no longer follows the primary would lose acknowledged
 *   writes. If the lease stays held (not solo) past a bound, the secondary
 *   steps down too.
 *
 * Time: the holder counts its lease from the moment it *sent* the granted
 * request, minus a margin; the arbiter counts from when it received it.
 * The holder's view therefore always ends first. Each side counts on its
 * own monotonic clock (src/sys/clock.ts), which no wall-clock step moves;
 * the protocol carries durations only (`ttlMs` asked, `remainingMs`
 * answered), never an instant of one host's clock for the other to read.
 *
 * `LeaseTable` is the arbiter's state (pure); `LeaseKeeper` renews a lease
 * through any `Arbiter` (the transport lives in src/api).
 */

import { monotonicMs, type Clock } from "../sys/clock.js";

/** Lease time-to-live: 1 s, like the default peer timeout (docs/replication.md). */
export const DEFAULT_LEASE_TTL_MS = 1000;
/** The holder stops trusting its lease this long before its end: covers timer lateness. */
export const LEASE_SAFETY_MARGIN_MS = 100;

export interface LeaseAnswer {
  granted: boolean;
  /** The lease is (now) solo: its holder ran alone; another holder never gets it. */
  solo: boolean;
  /** Who holds the lease (the asker when granted). */
  holder: string;
  /** The arbiter's remaining time on the lease. */
  remainingMs: number;
}

export interface Arbiter {
  /** Take or renew the lease of `vm` for `holder` (with `solo`, mark it solo). Rejects when the arbiter cannot be reached. */
  acquire(vm: string, holder: string, ttlMs: number, solo: boolean): Promise<LeaseAnswer>;
  /** Give the lease up (orderly end); best effort. */
  release(vm: string, holder: string): Promise<void>;
  close(): void;
}

/** An arbiter to hold the VM's lease with (the split-brain rule above). */
export interface ArbiterOptions {
  arbiter: Arbiter;
  vm: string;
  holder: string;
  ttlMs: number;
}

/** The arbiter's leases: one per VM name. `nowMs`: the arbiter's monotonic clock (src/sys/clock.ts). */
export class LeaseTable {
  private readonly leases = new Map<string, { holder: string; expiresAt: number; solo: boolean; disconnected: boolean }>();

  acquire(vm: string, holder: string, ttlMs: number, nowMs: number, solo = false): LeaseAnswer {
    const lease = this.leases.get(vm);
    // A lease whose holder's connection closed (its process died: holderDisconnected) and never marked solo is free at
    // once; the holder never acts alone without asking first (markSolo), and that ask is refused once another holds it.
    if (lease && lease.holder !== holder && (lease.solo || (lease.expiresAt > nowMs && !lease.disconnected))) {
      return { granted: false, solo: lease.solo, holder: lease.holder, remainingMs: Math.max(0, lease.expiresAt - nowMs) };
    }
    // The holder decides its own mark: a new session of the same holder clears it (its new secondary starts from checkpoint 0).
    this.leases.set(vm, { holder, expiresAt: nowMs + ttlMs, solo, disconnected: false });
    return { granted: true, solo, holder, remainingMs: ttlMs };
  }

  /**
   * The connection `holder` last renewed `vm`'s lease over has closed (the
   * arbiter's transport says so): the process that held it is gone, or it
   * will renew over a new connection (which clears this). True when that
   * made the lease free for another holder (it was not solo).
   */
  holderDisconnected(vm: string, holder: string): boolean {
    const l = this.leases.get(vm);
    if (!l || l.holder !== holder || l.solo) return false;
    l.disconnected = true;
    return true;
  }

  /** Whether `holder` holds `vm`'s lease marked solo (for the arbiter's log). */
  isSolo(vm: string, holder: string): boolean {
    const l = this.leases.get(vm);
    return l !== undefined && l.holder === holder && l.solo;
  }

  release(vm: string, holder: string): void {
    if (this.leases.get(vm)?.holder === holder) this.leases.delete(vm);
  }

  snapshot(nowMs: number): { vm: string; holder: string; solo: boolean; remainingMs: number }[] {
    return [...this.leases].map(([vm, l]) => ({ vm, holder: l.holder, solo: l.solo, remainingMs: Math.max(0, l.expiresAt - nowMs) }));
  }
}

export interface LeaseStatus {
  holder: string;
  solo: boolean;
  held: boolean;
  validForMs: number;
  renewals: number;
  failures: number;
  lastError?: string;
}

/**
 * Keeps one lease renewed. `validUntil` is the holder's conservative end
 * of the lease; `onExpired` fires once when it passes without a renewal.
 */
export class LeaseKeeper {
  private validUntil = 0;
  private timer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private renewals = 0;
  private failures = 0;
  private lastError: string | undefined;
  private solo = false;
  /** markSolo() was called: this side runs alone, and every later request carries the mark. */
  private wantSolo = false;
  /** The last refusal was a solo lease: never ours. */
  refusedSolo = false;
  /** The last refusal's remaining time on the arbiter (ms), and when it came (this keeper's clock). */
  refusal: { remainingMs: number; at: number } | undefined;

  constructor(
    private readonly arbiter: Arbiter,
    readonly vm: string,
    readonly holder: string,
    private readonly ttlMs: number,
    private readonly onExpired: () => void,
    /** The holder's monotonic clock: the lease is a duration from the request, never a wall-clock instant. */
    readonly now: Clock = monotonicMs,
  ) {}

  /** Whether the lease is ours right now (conservatively). */
  held(): boolean {
    return this.now() < this.validUntil;
  }

  /** One attempt (renewals keep the solo mark, also one still being asked for); true when granted. */
  async tryAcquire(solo = this.solo || this.wantSolo): Promise<boolean> {
    if (this.stopped) return false;
    const sentAt = this.now();
    try {
      const a = await this.arbiter.acquire(this.vm, this.holder, this.ttlMs, solo);
      if (!a.granted) {
        this.refusedSolo = a.solo;
        this.refusal = { remainingMs: a.remainingMs, at: this.now() };
        this.lastError = a.solo ? `held solo by ${a.holder}: it ran alone, this copy is stale` : `held by ${a.holder} for ${a.remainingMs} ms more`;
        return false;
      }
      this.solo = a.solo;
      this.validUntil = sentAt + this.ttlMs - LEASE_SAFETY_MARGIN_MS;
      this.renewals++;
      this.armExpiry();
      return true;
    } catch (err) {
      this.failures++;
      this.lastError = (err as Error).message;
      return false;
    }
  }

  /** Renew every ttl/3 from now on. */
  keep(): void {
    if (this.stopped || this.timer) return;
    const tick = () => {
      this.timer = setTimeout(() => {
        void this.tryAcquire().finally(() => {
          if (!this.stopped) tick();
        });
      }, Math.max(10, Math.floor(this.ttlMs / 3)));
    };
    tick();
  }

  private armExpiry(): void {
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    if (this.stopped) return;
    this.expiryTimer = setTimeout(() => {
      this.expiryTimer = undefined;
      if (this.stopped) return;
      // A timer may fire a fraction of a millisecond before its time on the monotonic clock (libuv counts whole
      // milliseconds of its cached loop time): then the lease still holds, and the check is made again when it ends.
      // Not re-arming here left onExpired unfired for good, and a solo side unfenced.
      if (this.held()) this.armExpiry();
      else this.onExpired();
    }, Math.max(0, this.validUntil - this.now()) + 1);
  }

  /** Stop renewing; with `release`, hand the lease back. */
  async stop(release: boolean): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    if (release) await this.arbiter.release(this.vm, this.holder).catch(() => undefined);
  }

  /** Mark the lease solo (this side runs alone); true when the arbiter agreed. */
  markSolo(): Promise<boolean> {
    // From now on every request asks for the mark: a renewal that fires while this one is on its way must not
    // reach the arbiter after it without the mark (the arbiter takes the holder's latest word).
    this.wantSolo = true;
    return this.tryAcquire(true);
  }

  status(): LeaseStatus {
    return {
      holder: this.holder,
      solo: this.solo,
      held: this.held(),
      validForMs: Math.max(0, this.validUntil - this.now()),
      renewals: this.renewals,
      failures: this.failures,
      ...(this.lastError ? { lastError: this.lastError } : {}),
    };
  }
}

/**
 * The secondary's question when its primary falls silent: may I take over?
 *
 * Granted once the primary's lease has run out. The arbiter's answers say
 * how long the holder's lease still runs; if that end moves later between
 * two answers, the holder renewed it: it is alive (only the link is down),
 * and this side steps down. So is it at once when the lease is solo. The
 * bound `giveUpMs` only guards against an arbiter that never answers; the
 * wait itself follows the holder's own ttl, whatever this side's is.
 */
export async function acquireForTakeover(keeper: LeaseKeeper, giveUpMs: number, retryMs = 50): Promise<boolean> {
  const deadline = keeper.now() + giveUpMs;
  let expiresAt: number | undefined;
  for (;;) {
    if (await keeper.tryAcquire(true)) return true;
    if (keeper.refusedSolo) return false;
    const r = keeper.refusal;
    if (r) {
      const end = r.at + r.remainingMs;
      // A renewal moves the end later by about a ttl; allow the answers' own jitter.
      if (expiresAt !== undefined && end > expiresAt + RENEWAL_JITTER_MS) return false;
      expiresAt = Math.min(expiresAt ?? end, end);
    }
    if (keeper.now() >= deadline) return false;
    const wait = r ? Math.max(10, Math.min(retryMs, r.remainingMs + 10)) : retryMs;
    await new Promise((res) => setTimeout(res, wait));
  }
}

/** Answers' timing noise tolerated before an end that moved later counts as a renewal. */
const RENEWAL_JITTER_MS = 50;
