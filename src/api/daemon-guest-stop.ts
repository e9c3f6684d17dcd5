/**
 * The daemon carrying out guest-stop-plan.ts: when its guest stops
 * (poweroff, reboot) or its engine fails, it destroys, restarts or
 * preserves the VM, one stop at a time, in order, each after any exclusive
 * operation (save, migrate, ...) that runs.
 */
import type { PrimaryReplicator } from "../colo/primary.js";
import type { SecondaryReplicator } from "../colo/secondary.js";
import type { GuestStop } from "../vm/guest-stop.js";
import type { Vm } from "../vm/vm.js";
import { planGuestStop, type DaemonRole } from "./guest-stop-plan.js";
import type { Logger } from "./log.js";

/** What acting on a guest's stop needs of the daemon (read when it acts, not when the stop came). */
export interface GuestStopDaemon {
  readonly log: Logger;
  vm(): Vm | undefined;
  /** The daemon is shutting down. */
  exiting(): boolean;
  /** Ends when the running exclusive operation does; undefined when none runs. */
  busyDone(): Promise<unknown> | undefined;
  primary(): PrimaryReplicator | undefined;
  secondary(): SecondaryReplicator | undefined;
  exclusive<T>(what: string, fn: () => Promise<T>): Promise<T>;
  shutdown(code: number, reason: string, opts?: { handOver?: boolean }): Promise<void>;
}

/** The daemon's part in replication, as guest-stop-plan.ts sees it. */
export function daemonRole(primary: PrimaryReplicator | undefined, secondary: SecondaryReplicator | undefined): DaemonRole {
  if (primary && primary.stats.mode === "primary") return "primary";
  if (secondary && !secondary.done) return "secondary";
  return "unprotected";
}

export class GuestStopHandler {
  /** Guest stops are acted on one at a time, in order. */
  private stopChain: Promise<void> = Promise.resolve();
  /** A secondary's replica stopped and was left so (the checkpoint after it replaces it): which checkpoint it followed. */
  private ignoredStop: { stop: GuestStop; applied: number } | undefined;

  constructor(private readonly daemon: GuestStopDaemon) {}

  /** The guest stopped (poweroff, reboot) or its engine failed: acted on in order, each after any exclusive operation. */
  guestStopped(stop: GuestStop): void {
    this.stopChain = this.stopChain
      .then(() => this.actOnStop(stop))
      .catch((err: unknown) => {
        this.daemon.log.error({ err }, "acting on the guest's stop failed");
        void this.daemon.shutdown(1, `acting on the guest's stop failed: ${(err as Error).message}`);
      });
  }

  /** on_poweroff / on_reboot / on_crash (guest-stop-plan.ts says what, for this daemon's role). */
  private async actOnStop(stop: GuestStop): Promise<void> {
    const daemon = this.daemon;
    for (let busyDone = daemon.busyDone(); busyDone; busyDone = daemon.busyDone()) await busyDone.catch(() => undefined);
    const vm = daemon.vm();
    if (daemon.exiting() || !vm || vm.state === "destroyed") return;
    const plan = planGuestStop(vm.config, stop, daemonRole(daemon.primary(), daemon.secondary()));
    if (plan.action === "ignore") {
      const secondary = daemon.secondary();
      if (secondary) this.ignoredStop = { stop, applied: secondary.applied };
      daemon.log.warn({ stop }, plan.reason);
      return;
    }
    daemon.log.warn({ stop, action: plan.action }, plan.reason);
    if (plan.action === "destroy") return daemon.shutdown(plan.exitCode, plan.reason, { handOver: plan.handOver === true });
    if (plan.endReplication) await this.endReplication(plan.reason);
    if (plan.action === "preserve") {
      await vm.pause();
      daemon.log.warn({ stop }, "preserved: the VM stays paused until `colo destroy`");
      return;
    }
    await daemon.exclusive("restarting the guest", () => vm.restart());
    daemon.log.info({ status: vm.status() }, "guest restarted");
  }

  /** A replicating primary's guest stopped: the secondary discards its copy (no takeover of a stopped guest); waits until this side runs alone. */
  private async endReplication(reason: string): Promise<void> {
    const primary = this.daemon.primary();
    if (!primary || primary.stats.mode !== "primary") return;
    await primary.stop(reason);
    await primary.done;
  }

  /** A survivor whose replica had stopped after the last checkpoint it applied: that stop is the VM's now. */
  actOnStopLeftByReplica(): void {
    const left = this.ignoredStop;
    this.ignoredStop = undefined;
    const secondary = this.daemon.secondary();
    if (!left || !secondary || left.applied !== secondary.applied) return;
    this.daemon.log.warn({ stop: left.stop }, "the guest had stopped since the last checkpoint: acting on it now");
    this.guestStopped(left.stop);
  }
}
