/**
 * How a secondary's session ends, once SecondaryReplicator.run() stopped
 * reading the primary and closed the connection (docs/replication.md
 * "Failover"):
 *
 * - the primary's orderly END: this copy is discarded;
 * - a local failure (LocalFailure: this side's engine, VM or disk failed):
 *   it steps down and discards its copy, whatever the arbiter would say;
 *   the primary, its connection closed, runs on unprotected;
 * - the primary lost (the stream ended or broke): with an arbiter it takes
 *   over only with the lease (lease.ts), else steps down; without one it
 *   takes over. A takeover commits the disks' SVM writes, keeps the TCP
 *   rewriter in both directions, loads a deferred state (Remus), has the
 *   VM join the LAN, run and announce itself, and sends the SVM's TCP
 *   output since the last checkpoint again (compare mode: what the dead
 *   primary may have held; net/recent-output.ts).
 *
 * Afterwards the survivor keeps renewing its lease; when it runs out it is
 * fenced (output dropped first, then the pause). A fence whose pause fails
 * ends the side: SecondaryVm.end.
 */
import type { FailoverResult } from "./disk/secondary-disk.js";
import { acquireForTakeover, LeaseKeeper, type ArbiterOptions } from "./lease.js";
import { messageOf, type LocalFailure } from "./local-failure.js";
import { TranslationChain } from "./net/link-translation.js";
import type { TcpRewriter } from "./net/tcp-rewriter.js";
import type { ReplicationStats } from "./replication-stats.js";
import type { SecondaryVm } from "./secondary.js";

/** Bound on asking the arbiter for the lease at takeover: only an arbiter that never answers takes this long. */
const TAKEOVER_GIVE_UP_MS = 60_000;

/** Why the session ended. */
export type SessionEnd =
  | { kind: "orderly"; reason: string }
  | { kind: "primary-lost"; reason: string }
  | { kind: "local"; failure: LocalFailure };

/** What the end needs of the secondary's session. */
export interface EndingSession {
  readonly vm: SecondaryVm;
  readonly stats: ReplicationStats;
  readonly rewriter: TcpRewriter;
  /** The primary's own link translations (LINK_TRANSLATION), outermost first; empty when it never took over. */
  inheritedLayers(): readonly TcpRewriter[];
  readonly arbiter: ArbiterOptions | undefined;
  log(msg: string, fields?: Record<string, unknown>): void;
  /** Takeover: every disk commits the SVM's writes and drops the PVM's not yet covered. */
  failoverDisks(): FailoverResult[];
  /** For the takeover's log: the replication mode and the last checkpoint applied. */
  where(): Record<string, unknown>;
  /** Before a takeover: the last complete checkpoint's device state into the engine (Remus defers it). */
  loadDeferred(): Promise<void>;
  /** Compare mode: the SVM's TCP output since the last checkpoint it applied (net/recent-output.ts), emptied. */
  recentOutput(): Uint8Array[];
}

export class SecondaryFailover {
  private lease: LeaseKeeper | undefined;

  constructor(private readonly session: EndingSession) {}

  /** Discard, step down or take over (the module comment); resolves with the session's reason once done. */
  async end(end: SessionEnd): Promise<string> {
    const { vm, stats } = this.session;
    if (end.kind === "orderly") {
      stats.mode = "unprotected";
      vm.setOutputFilter(undefined);
      this.session.log("the primary ended replication in order; discarding this copy", {});
      await vm.discard(end.reason);
      return end.reason;
    }
    if (end.kind === "local") {
      const reason = `local failure: ${end.failure.what}: ${messageOf(end.failure.cause)}`;
      stats.failover("secondary", reason, "stepped-down");
      this.session.log("this side failed: stepping down without a takeover, discarding this copy; the primary runs on unprotected", { reason });
      await vm.discard(`stepped down: ${reason}`);
      return reason;
    }
    const reason = end.reason;
    const a = this.session.arbiter;
    if (a) {
      const lease = new LeaseKeeper(a.arbiter, a.vm, a.holder, a.ttlMs, () => this.leaseExpired());
      this.lease = lease;
      // Ours once the primary's lease runs out (it stops renewing when dead), never if it renews or ran alone (solo).
      const granted = await acquireForTakeover(lease, TAKEOVER_GIVE_UP_MS);
      if (!granted) {
        const why = `${reason}; no takeover: ${lease.status().lastError ?? "?"}`;
        stats.failover("secondary", why, "stepped-down");
        this.session.log("primary silent but it holds the lease (only the link is lost): stepping down, discarding this copy", { reason, lease: lease.status() });
        await lease.stop(false);
        await vm.discard(`stepped down: ${why}`);
        return reason;
      }
      lease.keep();
      stats.lease = () => ({ ...lease.status() });
    }
    await this.takeOver(reason);
    return reason;
  }

  private async takeOver(reason: string): Promise<void> {
    const { vm, stats, rewriter } = this.session;
    stats.failover("secondary", reason);
    const disks = this.session.failoverDisks();
    this.session.log("primary lost; taking over", { reason, ...this.session.where(), discarded: stats.discardedCheckpoints, disks });
    // Connections opened since the last checkpoint keep the SVM's sequence numbers: rewrite both ways, for good,
    // at the TAP (outermost: a later session that protects this VM again works beneath it). Beneath the primary's
    // own translations, if it was itself a survivor: the clients of its connections know their numbers.
    vm.setOutputFilter(undefined);
    vm.setInputFilter(undefined);
    vm.setLinkTranslation(TranslationChain.of(this.session.inheritedLayers(), rewriter));
    await this.session.loadDeferred();
    await vm.takeOver();
    // What the primary may have held for the SVM's match died with it: sent again now, not at the guest's next
    // retransmission (200 ms after the first send, doubling). A client that had it drops the duplicate.
    const again = this.session.recentOutput();
    for (const f of again) vm.sendOutput(f);
    this.session.log("took over", { ...this.session.where(), sentAgain: again.length });
  }

  /** The survivor's lease ran out (arbiter unreachable): it may not run alone any more. */
  private leaseExpired(): void {
    const { vm, stats } = this.session;
    if (stats.mode !== "unprotected") return;
    void this.lease?.stop(false);
    // Output first: nothing reaches the LAN from here on, before the pause is even tried.
    vm.setOutputFilter(() => false);
    stats.failover("secondary", `the lease ran out: ${this.lease?.status().lastError ?? "?"}`, "fenced");
    vm.pause().then(
      () => this.session.log("fenced: the lease ran out; output stopped and the VM paused", {}),
      (err: unknown) => {
        // A VM that cannot be paused may still run (its output is dropped): the daemon ends it.
        const error = messageOf(err);
        stats.sideFailed("fence", error);
        void vm.end(`fence failed: pausing the VM: ${error}`);
      },
    );
  }

  /** A new session of this VM takes over the lease (same holder): stop renewing from this one. */
  async stopLease(): Promise<void> {
    await this.lease?.stop(false);
  }

  /** The VM is gone: give its lease back (a later session may take it). */
  async releaseLease(): Promise<void> {
    await this.lease?.stop(true);
    this.session.arbiter?.arbiter.close();
  }
}
