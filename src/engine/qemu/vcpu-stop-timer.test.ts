import assert from "node:assert/strict";
import { test } from "node:test";
import type { QmpEvent } from "./qmp-wire.js";
import { VcpuStopTimer } from "./vcpu-stop-timer.js";

const at = (event: string, seconds: number, microseconds: number): QmpEvent => ({ event, data: {}, timestamp: { seconds, microseconds } });

test("vCPU stop timer: STOP to RESUME of one process, in ms; none for another process's RESUME, a clock step, or a pause in progress", () => {
  const t = new VcpuStopTimer<string>();
  assert.equal(t.lastMs(), undefined);
  t.pausing();
  t.stopped("a", at("STOP", 100, 999_000));
  t.resumed("a", at("RESUME", 101, 6_500));
  assert.equal(t.lastMs(), 7.5);
  t.pausing();
  assert.equal(t.lastMs(), undefined, "a new pause clears the last figure");
  t.stopped("a", at("STOP", 200, 0));
  t.resumed("b", at("RESUME", 200, 4000));
  assert.equal(t.lastMs(), undefined, "a standby made current by a load has no STOP of its own");
  t.resumed("b", at("RESUME", 200, 5000));
  assert.equal(t.lastMs(), undefined, "a RESUME without a STOP before it");
  t.stopped("b", at("STOP", 300, 0));
  t.resumed("b", at("RESUME", 299, 0));
  assert.equal(t.lastMs(), undefined, "QEMU's clock stepped back");
});
