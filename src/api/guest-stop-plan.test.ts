import { test } from "node:test";
import assert from "node:assert/strict";
import { parseVmConfig } from "../config/index.js";
import type { GuestStop } from "../vm/guest-stop.js";
import { planGuestStop, type DaemonRole } from "./guest-stop-plan.js";

const config = parseVmConfig("name = 'g'\nkernel = 'k'\non_poweroff = 'destroy'\non_reboot = 'restart'\non_crash = 'preserve'\n", "g.cfg");
const stop = (kind: GuestStop["kind"]): GuestStop => (kind === "crash" ? { kind, at: 1, message: "v86 failed" } : { kind, at: 1 });

test("guest stop plan: unprotected, the config's action for each kind; a crash exits 1", () => {
  assert.deepEqual(planGuestStop(config, stop("poweroff"), "unprotected"), {
    action: "destroy",
    reason: `the guest powered off; on_poweroff = "destroy"`,
    endReplication: false,
    exitCode: 0,
  });
  assert.deepEqual(planGuestStop(config, stop("reboot"), "unprotected"), {
    action: "restart",
    reason: `the guest rebooted; on_reboot = "restart"`,
    endReplication: false,
    exitCode: 0,
  });
  assert.deepEqual(planGuestStop(config, stop("crash"), "unprotected"), {
    action: "preserve",
    reason: `the engine failed (v86 failed); on_crash = "preserve"`,
    endReplication: false,
    exitCode: 1,
  });
});

test("guest stop plan: a replicating primary does the same after ending replication in order", () => {
  for (const kind of ["poweroff", "reboot"] as const) {
    const unprotected = planGuestStop(config, stop(kind), "unprotected");
    const primary = planGuestStop(config, stop(kind), "primary");
    assert.deepEqual(primary, { ...unprotected, endReplication: true });
  }
});

test("guest stop plan: a replicating primary whose engine failed hands over: no orderly end, the secondary takes over, whatever on_crash says", () => {
  assert.deepEqual(planGuestStop(config, stop("crash"), "primary"), {
    action: "destroy",
    reason: "the engine failed (v86 failed) on the primary: a host failure for the pair; the secondary takes over",
    endReplication: false,
    exitCode: 1,
    handOver: true,
  });
});

test("guest stop plan: a secondary ignores its replica's poweroff and reboot, and ends on a crash whatever on_crash says", () => {
  const role: DaemonRole = "secondary";
  for (const kind of ["poweroff", "reboot"] as const) {
    const plan = planGuestStop(config, stop(kind), role);
    assert.equal(plan.action, "ignore");
    assert.match(plan.reason, /until the next checkpoint replaces it/);
  }
  const crash = planGuestStop(config, stop("crash"), role);
  assert.deepEqual(crash, {
    action: "destroy",
    reason: "the engine failed (v86 failed) on the secondary: this replica ends, the primary runs on unprotected",
    endReplication: false,
    exitCode: 1,
  });
});
