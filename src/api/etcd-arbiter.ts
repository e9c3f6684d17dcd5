/**
 * etcd (v3) as the lease holder (`--arbiter etcd://HOST:PORT[,HOST:PORT...]`):
 * the split-brain rule of src/colo/lease.ts (LeaseTable's semantics: holder,
 * ttl, solo) kept in an etcd cluster instead of `colo arbiter`'s memory, so
 * the witness itself survives the loss of a member. It implements `Arbiter`:
 * LeaseKeeper, acquireForTakeover and everything above are unchanged.
 *
 * One key per VM, `/colo/lease/<vm>` (URI-encoded), its value JSON
 * `{"holder":H,"solo":B,"ttlMs":T,"serverTtlMs":S}`:
 *
 * - **acquire** (take or renew): a transaction that puts our value only if
 *   the key's mod revision is still the one we expect — 0 when the key is
 *   absent (nobody holds the lease), else the revision of our own last
 *   write. If the comparison fails, the same transaction reads the key
 *   back: another holder's value is a refusal (its `holder`, its `solo`);
 *   ours (a new session of this holder, or our own earlier write whose answer
 *   was lost) is renewed with its revision; an absent key is taken. etcd
 *   serialises transactions, and every successful one changes the mod
 *   revision, so of two holders racing for a free key exactly one succeeds,
 *   and a holder's write can only follow its own.
 * - **not solo**: the value is attached to a fresh etcd lease granted for
 *   this request (LeaseGrant, then the transaction). The key vanishes when
 *   that lease runs out: that is "the lease ran out on the arbiter's clock".
 * - **solo**: the value is put with no etcd lease, so it never lapses: a
 *   solo lease is never granted to another holder, however long its holder
 *   is silent (LeaseTable: a solo lease is refused even expired). Its holder
 *   may renew it, clear the mark (put again with a lease), or release it.
 * - **release**: deletes the key if it is still ours (the same comparison).
 *
 * Time, and why the rounding cannot break "never both". The holder
 * (LeaseKeeper) trusts its lease until `sent + ttlMs - 100 ms`, `sent`
 * being when it called acquire, on its own monotonic clock. etcd counts
 * TTLs in whole seconds, so the etcd lease is asked for ceil(ttlMs / 1000) s
 * (at least 1 s); etcd may grant more (its minimum TTL is 1.5 election
 * timeouts rounded up: 2 s with its defaults) and never less (checked:
 * less is an error). That lease is granted after `sent`, and etcd's leader
 * counts it from its own receipt, on its monotonic clock, so the key cannot
 * vanish before `sent + granted TTL >= sent + ttlMs`: later than the
 * holder's view ends. Rounding and etcd's minimum only make the server-side
 * bound longer; so does etcd's expiry loop (every 500 ms) and a leader
 * change (the new leader extends every lease). Another holder can create
 * the key only after it vanished. So the holder's own deadline is the
 * client-side bound, the etcd lease the server-side one, and the first
 * always ends first. The cost: a takeover waits for the etcd lease, up to
 * the granted TTL + 0.5 s after the last renewal (2-2.5 s for a 1000 ms
 * lease with etcd's defaults; measured in the tests).
 *
 * Why the mod revision and no lease is ever revoked: a request that timed
 * out here may still be applied by etcd later (it was in the leader's log).
 * Comparing on the mod revision makes every transaction apply at most once
 * and never after a newer write, so a late renewal cannot move the key back
 * to an older, shorter etcd lease. For the same reason no etcd lease is
 * revoked: revoking a lease a late write attached the key to would delete
 * it while its holder still trusts it. Unused leases hold no key and run out
 * by themselves (a few per VM at a time).
 *
 * A refusal's `remainingMs` is an estimate for the waiting side only (no
 * grant rests on it): the end is put at the holder's granted etcd TTL plus
 * ETCD_EXPIRY_LAG_MS (etcd's expiry loop) after this client first saw the
 * holder's current write. A renewal is a new write, so the end moves later,
 * which is how acquireForTakeover sees that the holder is alive; while the
 * write stays the same the end stays put. Should etcd keep the key past it
 * (a leader change extends every lease), remainingMs goes below zero —
 * overdue — rather than stop at 0: a clamped value would move the end later
 * with every answer and pass for a renewal, and the waiting side would step
 * down although the holder is dead. (Solo refusals are final anyway: their
 * remainingMs counts the holder's ttl and stops at 0.)
 *
 * Failures: every operation (acquire or release, all its etcd calls) is
 * bounded by ETCD_OPERATION_TIMEOUT_MS on the monotonic clock, and each
 * call to one member by ETCD_ATTEMPT_TIMEOUT_MS; a member that fails or is
 * silent is passed over for the next. An unreachable cluster, a lost
 * quorum or a key holding something colo did not write rejects the
 * operation (EtcdArbiterError), which LeaseKeeper counts like an
 * unreachable built-in arbiter: no grant, the caller fences. A rejection
 * says nothing about what etcd did: a timed-out solo mark may still be
 * applied, after which nobody runs (never two). Operations on one VM run
 * one after another, in the order they were called, as on the built-in
 * arbiter's single connection. No TLS or auth to etcd (yet): use it on a
 * network the hosts trust.
 */
import { noop } from "cockatiel";
import { Etcd3, type IKeyValue } from "etcd3";
import { formatEndpoint, type Endpoint } from "../channel/secure-channel.js";
import type { Arbiter, LeaseAnswer } from "../colo/lease.js";
import { monotonicMs, type Clock } from "../sys/clock.js";

/** One acquire or release, every etcd call in it included (as the built-in arbiter's request bound). */
export const ETCD_OPERATION_TIMEOUT_MS = 500;
/** One call to one member: past it the next member is asked (within the operation's bound). */
export const ETCD_ATTEMPT_TIMEOUT_MS = 250;
export const ETCD_LEASE_PREFIX = "/colo/lease/";
/** How long after its etcd lease ran out a key may still be there: etcd revokes expired leases every 500 ms, then commits. */
export const ETCD_EXPIRY_LAG_MS = 1000;
/** grpc-js's own deadline is this much later than our bound, so ours fires first and names the cause. */
const GRPC_DEADLINE_SLACK_MS = 50;
/** Transactions one acquire may need when the key changes under it (a lost answer, a racing holder). */
const MAX_ROUNDS = 4;

export type EtcdArbiterErrorCode = "UNREACHABLE" | "TIMEOUT" | "BAD_KEY" | "BAD_TTL" | "CONTENDED" | "CLOSED";

export class EtcdArbiterError extends Error {
  constructor(
    readonly code: EtcdArbiterErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "EtcdArbiterError";
  }
}

/** What the key holds: one lease. */
interface LeaseValue {
  holder: string;
  solo: boolean;
  /** The holder's ttl. */
  ttlMs: number;
  /** The etcd lease the key is attached to, as granted (0 when solo: none). */
  serverTtlMs: number;
}

function decodeValue(kv: IKeyValue, key: string): LeaseValue {
  let v: unknown;
  try {
    v = JSON.parse(kv.value.toString("utf8"));
  } catch {
    v = undefined;
  }
  const o = typeof v === "object" && v !== null ? (v as Record<string, unknown>) : {};
  const int = (x: unknown) => typeof x === "number" && Number.isInteger(x) && x >= 0;
  if (typeof o.holder !== "string" || o.holder.length === 0 || typeof o.solo !== "boolean" || !int(o.ttlMs) || !int(o.serverTtlMs)) {
    throw new EtcdArbiterError("BAD_KEY", `key ${key} holds a value colo did not write (${JSON.stringify(kv.value.toString("utf8").slice(0, 80))}): no lease is granted while it is there`);
  }
  return { holder: o.holder, solo: o.solo, ttlMs: o.ttlMs as number, serverTtlMs: o.serverTtlMs as number };
}

function oneLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(/\s+/g, " ").trim();
}

/** `p`, or a rejection with `timeout()` once `ms` have passed (a libuv timer: the monotonic clock). `p` rejecting later is handled. */
function within<T>(p: Promise<T>, ms: number, timeout: () => Error): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(timeout()), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

export interface EtcdArbiterOptions {
  /** Default ETCD_OPERATION_TIMEOUT_MS. */
  operationTimeoutMs?: number;
  /** Default ETCD_ATTEMPT_TIMEOUT_MS. */
  attemptTimeoutMs?: number;
  /** Default ETCD_LEASE_PREFIX. */
  prefix?: string;
  /** The monotonic clock the bounds and estimates run on. */
  now?: Clock;
}

/** Per-call options for etcd3's RPC methods (grpc-js CallOptions). */
interface CallOptions {
  deadline: number;
}

export class EtcdArbiter implements Arbiter {
  /** `etcd://HOST:PORT,...`: named in every error. */
  readonly name: string;
  private readonly members: { endpoint: Endpoint; client: Etcd3 }[];
  /** The member that answered last: asked first. */
  private preferred = 0;
  private closed = false;
  private readonly operationTimeoutMs: number;
  private readonly attemptTimeoutMs: number;
  private readonly prefix: string;
  private readonly now: Clock;
  /** Each VM's operations, one after another. */
  private readonly queues = new Map<string, Promise<void>>();
  /** The mod revision of our last write of a VM's key, and for which holder. */
  private readonly written = new Map<string, { holder: string; modRevision: string }>();
  /** When this client first saw another holder's current write of a VM's key (for remainingMs). */
  private readonly seen = new Map<string, { modRevision: string; at: number }>();

  constructor(
    readonly endpoints: readonly Endpoint[],
    options: EtcdArbiterOptions = {},
  ) {
    if (endpoints.length === 0) throw new EtcdArbiterError("UNREACHABLE", "etcd: no endpoint");
    this.name = `etcd://${endpoints.map(formatEndpoint).join(",")}`;
    this.operationTimeoutMs = options.operationTimeoutMs ?? ETCD_OPERATION_TIMEOUT_MS;
    this.attemptTimeoutMs = options.attemptTimeoutMs ?? ETCD_ATTEMPT_TIMEOUT_MS;
    this.prefix = options.prefix ?? ETCD_LEASE_PREFIX;
    this.now = options.now ?? monotonicMs;
    // One client per member, without etcd3's retries and circuit breakers: this class picks the member and bounds each call
    // (a breaker would keep a member that recovered out for 5 s, longer than a lease).
    this.members = endpoints.map((endpoint) => ({
      endpoint,
      client: new Etcd3({ hosts: `http://${formatEndpoint(endpoint)}`, faultHandling: { host: () => noop, global: noop } }),
    }));
  }

  acquire(vm: string, holder: string, ttlMs: number, solo: boolean): Promise<LeaseAnswer> {
    return this.operation(`acquire of ${vm} for ${holder}`, vm, (deadline) => this.acquireNow(vm, holder, ttlMs, solo, deadline));
  }

  release(vm: string, holder: string): Promise<void> {
    return this.operation(`release of ${vm} by ${holder}`, vm, (deadline) => this.releaseNow(vm, holder, deadline));
  }

  close(): void {
    this.closed = true;
    for (const m of this.members) m.client.close();
  }

  /** Runs `fn` after the VM's earlier operations, the whole bounded from now. */
  private operation<T>(what: string, vm: string, fn: (deadline: number) => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new EtcdArbiterError("CLOSED", `${this.name}: ${what}: client closed`));
    const deadline = this.now() + this.operationTimeoutMs;
    const run = (this.queues.get(vm) ?? Promise.resolve()).then(() => fn(deadline));
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.queues.set(vm, tail);
    void tail.then(() => {
      if (this.queues.get(vm) === tail) this.queues.delete(vm);
    });
    const timeout = () => new EtcdArbiterError("TIMEOUT", `${this.name}: ${what}: no answer within ${this.operationTimeoutMs} ms`);
    return within(run, this.operationTimeoutMs, timeout).catch((err: unknown) => {
      if (err instanceof EtcdArbiterError && err.code === "TIMEOUT") throw err;
      const code = err instanceof EtcdArbiterError ? err.code : "UNREACHABLE";
      throw new EtcdArbiterError(code, `${this.name}: ${what}: ${oneLine(err)}`);
    });
  }

  /** One etcd call, on the preferred member first, then on the others, each attempt bounded. */
  private async call<T>(deadline: number, rpc: (client: Etcd3, options: CallOptions) => Promise<T>): Promise<T> {
    const failures: string[] = [];
    for (let i = 0; i < this.members.length; i++) {
      const index = (this.preferred + i) % this.members.length;
      const member = this.members[index];
      const left = Math.floor(deadline - this.now());
      if (!member || left <= 0) break;
      const ms = Math.min(left, this.attemptTimeoutMs);
      try {
        // grpc-js takes an absolute wall-clock deadline and turns it straight back into a timer: Date is read only to
        // hand it about `ms`, so grpc-js drops the call once we gave up on it. The bound itself is `within`'s (monotonic).
        const call = rpc(member.client, { deadline: Date.now() + ms + GRPC_DEADLINE_SLACK_MS });
        const r = await within(call, ms, () => new Error(`no answer within ${ms} ms`));
        this.preferred = index;
        return r;
      } catch (err) {
        if (this.closed) throw new EtcdArbiterError("CLOSED", "client closed");
        failures.push(`${formatEndpoint(member.endpoint)}: ${oneLine(err)}`);
      }
    }
    throw new EtcdArbiterError("UNREACHABLE", failures.length > 0 ? failures.join("; ") : "no time left for another call");
  }

  private keyOf(vm: string): Buffer {
    return Buffer.from(this.prefix + encodeURIComponent(vm));
  }

  /** The key as it is now (a linearizable read), undefined when absent. */
  private async read(key: Buffer, deadline: number): Promise<IKeyValue | undefined> {
    return (await this.call(deadline, (c, o) => c.kv.range({ key }, o))).kvs[0];
  }

  /** A new etcd lease of at least `ttlMs` (whole seconds, rounded up). */
  private async grant(ttlMs: number, deadline: number): Promise<{ id: string; ttlMs: number }> {
    const asked = Math.max(1, Math.ceil(ttlMs / 1000));
    const g = await this.call(deadline, (c, o) => c.leaseClient.leaseGrant({ TTL: asked, ID: 0 }, o));
    const granted = Number(g.TTL);
    if (g.error || !Number.isInteger(granted) || granted * 1000 < ttlMs) {
      throw new EtcdArbiterError("BAD_TTL", `etcd granted a lease of ${g.TTL} s${g.error ? ` (${g.error})` : ""} for a ${ttlMs} ms ttl (asked ${asked} s)`);
    }
    return { id: g.ID, ttlMs: granted * 1000 };
  }

  private refusal(vm: string, kv: IKeyValue, v: LeaseValue): LeaseAnswer {
    const now = this.now();
    let seen = this.seen.get(vm);
    if (!seen || seen.modRevision !== kv.mod_revision) {
      seen = { modRevision: kv.mod_revision, at: now };
      this.seen.set(vm, seen);
    }
    const left = Math.round(seen.at + (v.solo ? v.ttlMs : Math.max(v.ttlMs, v.serverTtlMs) + ETCD_EXPIRY_LAG_MS) - now);
    return { granted: false, solo: v.solo, holder: v.holder, remainingMs: v.solo ? Math.max(0, left) : left };
  }

  private async acquireNow(vm: string, holder: string, ttlMs: number, solo: boolean, deadline: number): Promise<LeaseAnswer> {
    const key = this.keyOf(vm);
    const keyText = key.toString();
    const ours = this.written.get(vm);
    let expect: string; // the key's mod revision the transaction expects: "0" = absent
    if (ours && ours.holder === holder) {
      expect = ours.modRevision;
    } else {
      // Not ours as far as we know: look first, so a refusal costs a read, not a lease and a write.
      const kv = await this.read(key, deadline);
      const v = kv ? decodeValue(kv, keyText) : undefined;
      if (kv && v && v.holder !== holder) return this.refusal(vm, kv, v);
      expect = kv ? kv.mod_revision : "0";
    }
    const lease = solo ? undefined : await this.grant(ttlMs, deadline);
    const value = Buffer.from(JSON.stringify({ holder, solo, ttlMs, serverTtlMs: lease ? lease.ttlMs : 0 } satisfies LeaseValue));
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const r = await this.call(deadline, (c, o) =>
        c.kv.txn(
          {
            compare: [{ key, target: "Mod", result: "Equal", mod_revision: expect }],
            success: [{ request_put: { key, value, lease: lease ? lease.id : "0" } }],
            failure: [{ request_range: { key } }],
          },
          o,
        ),
      );
      if (r.succeeded) {
        this.written.set(vm, { holder, modRevision: r.header.revision });
        return { granted: true, solo, holder, remainingMs: ttlMs };
      }
      const kv = r.responses[0]?.response_range?.kvs[0];
      const v = kv ? decodeValue(kv, keyText) : undefined;
      if (kv && v && v.holder !== holder) {
        if (this.written.get(vm)?.holder === holder) this.written.delete(vm);
        return this.refusal(vm, kv, v);
      }
      expect = kv ? kv.mod_revision : "0"; // ours, written since we looked (a lost answer, another session), or gone
    }
    throw new EtcdArbiterError("CONTENDED", `key ${keyText} changed under ${MAX_ROUNDS} transactions in a row`);
  }

  private async releaseNow(vm: string, holder: string, deadline: number): Promise<void> {
    const key = this.keyOf(vm);
    const keyText = key.toString();
    const ours = this.written.get(vm);
    let expect = ours && ours.holder === holder ? ours.modRevision : undefined;
    try {
      for (let round = 0; round < MAX_ROUNDS; round++) {
        if (expect === undefined) {
          const kv = await this.read(key, deadline);
          if (!kv || decodeValue(kv, keyText).holder !== holder) return;
          expect = kv.mod_revision;
        }
        const r = await this.call(deadline, (c, o) =>
          c.kv.txn({ compare: [{ key, target: "Mod", result: "Equal", mod_revision: expect }], success: [{ request_delete_range: { key } }], failure: [{ request_range: { key } }] }, o),
        );
        if (r.succeeded) return;
        const kv = r.responses[0]?.response_range?.kvs[0];
        if (!kv || decodeValue(kv, keyText).holder !== holder) return; // gone, or another holder's: nothing of ours to give back
        expect = kv.mod_revision;
      }
      throw new EtcdArbiterError("CONTENDED", `key ${keyText} changed under ${MAX_ROUNDS} transactions in a row`);
    } finally {
      if (this.written.get(vm)?.holder === holder) this.written.delete(vm);
    }
  }
}
