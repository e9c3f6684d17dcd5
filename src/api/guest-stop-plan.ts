/**
 * What the daemon does when its guest stops (src/vm's GuestStop): the
 * config's on_poweroff / on_reboot / on_crash (xl.cfg(5)), adjusted for the
 * daemon's part in replication. Pure: the daemon carries the plan out.
 *
 * - unprotected (no replication; a primary running alone; a survivor): the
 *   config's action.
 * - replicating primary: the same action, after replication ends in order
 *   (the secondary discards its copy instead of taking over a guest that
 *   stopped; a restarted or preserved VM runs, or waits, unprotected).
 *   Except when its engine failed (qemu killed or crashed): that is a host
 *   failure for the pair, as if the daemon had died: the replication
 *   connection is dropped, not ended, and the secondary takes over.
 * - secondary, not taken over: its VM is a replica that the next checkpoint
 *   replaces, and the primary's own guest decides: a poweroff or reboot is
 *   ignored (the vCPU stays stopped until then); a crash means this replica
 *   cannot go on, whatever on_crash says: the secondary ends and the
 *   primary runs on unprotected.
 */
import type { LifecycleAction, VmConfig } from "../config/index.js";
import { LIFECYCLE_KEY, lifecycleActionOf, type GuestStop } from "../vm/guest-stop.js";

export type DaemonRole = "unprotected" | "primary" | "secondary";

export type GuestStopPlan =
  | { action: "ignore"; reason: string }
  | { action: LifecycleAction; reason: string; endReplication: boolean; exitCode: number; handOver?: true };

const WHAT: Readonly<Record<GuestStop["kind"], string>> = {
  poweroff: "the guest powered off",
  reboot: "the guest rebooted",
  crash: "the engine failed",
};

export function planGuestStop(config: VmConfig, stop: GuestStop, role: DaemonRole): GuestStopPlan {
  const what = `${WHAT[stop.kind]}${stop.message !== undefined ? ` (${stop.message})` : ""}`;
  if (role === "secondary") {
    if (stop.kind === "crash") {
      return { action: "destroy", reason: `${what} on the secondary: this replica ends, the primary runs on unprotected`, endReplication: false, exitCode: 1 };
    }
    return { action: "ignore", reason: `${what} on the secondary: its vCPU stays stopped until the next checkpoint replaces it; the primary's guest decides` };
  }
  if (role === "primary" && stop.kind === "crash") {
    return { action: "destroy", reason: `${what} on the primary: a host failure for the pair; the secondary takes over`, endReplication: false, exitCode: 1, handOver: true };
  }
  const action = lifecycleActionOf(config, stop.kind);
  return {
    action,
    reason: `${what}; ${LIFECYCLE_KEY[stop.kind]} = "${action}"`,
    endReplication: role === "primary",
    exitCode: stop.kind === "crash" ? 1 : 0,
  };
}
