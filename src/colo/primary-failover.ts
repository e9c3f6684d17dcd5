/**
 * What the primary does once replication ended without a hand-over
 * (docs/replication.md "Failover", "Fencing and failures"):
 *
 * - It may act alone (no arbiter, the arbiter marked its lease solo, or
 *   the session ended before checkpoint 0): release everything held and
 *   run on unprotected. A resume that fails then ends the side.
 * - It may not: it is fenced. Output first — the filter drops every frame
 *   and the held ones are dropped — then the pause. A pause that fails
 *   leaves a VM that may run: the side ends (PrimaryVm.end: the daemon
 *   destroys the VM).
 *
 * A side running alone is fenced when its lease runs out.
 */
import type { OutputCommit } from "./compare-output.js";
import type { LeaseKeeper } from "./lease.js";
import { messageOf } from "./local-failure.js";
import type { PrimaryVm } from "./primary.js";
import type { ReplicationStats } from "./replication-stats.js";

/** What going alone or being fenced needs of the primary's session. */
export interface AloneSide {
  readonly vm: PrimaryVm;
  readonly stats: ReplicationStats;
  readonly output: OutputCommit;
  readonly lease: LeaseKeeper | undefined;
  log(msg: string, fields?: Record<string, unknown>): void;
}

export class PrimaryFailover {
  constructor(private readonly side: AloneSide) {}

  /**
   * The secondary is lost (or replication stopped): run on unprotected if
   * this side may act alone, else fence. `secondaryMayHoldCopy`: checkpoint
   * 0's end was sent (before it the secondary holds nothing it could take
   * over with, so going alone is safe; the solo mark is asked for, best
   * effort).
   */
  async goAlone(reason: string, secondaryMayHoldCopy: boolean): Promise<void> {
    const { vm, stats, output, lease } = this.side;
    const marked = lease ? await lease.markSolo() : true;
    if (!marked && secondaryMayHoldCopy) {
      this.fence(reason, `the arbiter did not let this side run alone: ${lease?.status().lastError ?? "?"}`);
      return;
    }
    vm.setOutputFilter(undefined);
    for (const f of output.releaseAll()) vm.sendOutput(f);
    stats.failover("primary", reason);
    this.side.log("secondary lost; running on unprotected", { reason, ...(lease ? { lease: lease.status() } : {}) });
    await vm.resume().catch((err: unknown) => {
      // A paused VM that cannot resume serves nobody, and there is no secondary left: the daemon ends it.
      void vm.end(this.resumeFailed("running on unprotected", err));
    });
  }

  /** A resume failed (`after` what): shown in the status; returns the reason the side ends with. */
  resumeFailed(after: string, err: unknown): string {
    const error = messageOf(err);
    this.side.stats.sideFailed("resume", error, after);
    return after === "running on unprotected" ? `resuming the VM to run on unprotected failed: ${error}` : `resuming the VM after ${after} failed: ${error}`;
  }

  /** May not act alone: drop held output, keep dropping, then stop the guest; a failed pause ends the side. */
  fence(reason: string, why: string): void {
    const { vm, stats, output, lease } = this.side;
    // A fenced side stops renewing: the lease runs out and the other side may take over.
    void lease?.stop(false);
    vm.setOutputFilter(() => false);
    output.releaseAll();
    stats.failover("primary", `${reason}; ${why}`, "fenced");
    vm.pause().then(
      () => this.side.log("fenced: output stopped and the VM paused", { reason, why }),
      (err: unknown) => {
        const error = messageOf(err);
        stats.sideFailed("fence", error);
        void vm.end(`fence failed: pausing the VM: ${error}`);
      },
    );
  }

  /** The lease ran out (arbiter unreachable): fatal only for a side running alone. */
  leaseExpired(): void {
    const { stats, lease } = this.side;
    if (stats.mode === "unprotected") this.fence("running alone", `the lease ran out: ${lease?.status().lastError ?? "?"}`);
    else if (stats.mode === "primary") this.side.log("the arbiter's lease ran out while the secondary is connected; renewing", { lease: lease?.status() });
  }
}
