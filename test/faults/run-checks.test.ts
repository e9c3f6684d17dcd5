import { test } from "node:test";
import assert from "node:assert/strict";
import type { RunResult } from "./run-result.js";
import { AckProgress, runFailures } from "./run-checks.js";

function passing(): RunResult {
  return {
    run: 1,
    fault: "kill-primary",
    survivor: "h2",
    outcome: { h1: "gone", h2: "running/unprotected" },
    lostWrites: 0,
    incrViolations: 0,
    acknowledged: 700,
    ackedBeforeFault: 300,
    ackedAfterFault: 250,
    connectionResets: 0,
    splitBrain: false,
    wire: { beforeFault: { h1: 900, h2: 0 }, afterFault: { h1: 0, h2: 400 }, sender: "h2" },
    statusOverlapPolls: 0,
    loopDelayMaxMs: { h1: 40, h2: 35 },
    failoverMs: 1800,
    ms: 60_000,
  };
}

test("AckProgress: the verifying client's progress lines, split anywhere, other lines ignored", () => {
  const p = new AckProgress();
  assert.equal(p.latest(), 0);
  p.feed("verify-client: prefix colo:v:ab, 2 connection(s) to 10.77.0.10:6379\nverify-client: 1s acked 4", 1000);
  assert.equal(p.latest(), 0, "a line counts once it is complete");
  p.feed("2 (42/s) unacked 0 resets 0 timeouts 0 reconnects 0 connected 2\n", 1010);
  p.feed("verify-client: 2s acked 90 (48/s) unacked 1 resets 0 timeouts 0 reconnects 0 connected 2\nverify-client: 3s acked 95 (5/s) unacked 0 resets 1 timeouts 0 reconnects 1 connected 2\n", 3000);
  assert.deepEqual(p.readings, [
    { atMs: 1010, acked: 42 },
    { atMs: 3000, acked: 90 },
    { atMs: 3000, acked: 95 },
  ]);
  assert.equal(p.latest(), 95);
  assert.deepEqual(p.firstFrom(1011), { atMs: 3000, acked: 90 });
  assert.deepEqual(p.firstFrom(1010), { atMs: 1010, acked: 42 });
  assert.equal(p.firstFrom(3001), undefined);
  assert.match(p.tail(), /prefix colo:v:ab[\s\S]*3s acked 95/);
});

test("runFailures: a passing run has none; each failed check is named", () => {
  assert.deepEqual(runFailures(passing()), []);
  assert.deepEqual(runFailures({ ...passing(), ackedBeforeFault: 0 }), ["no acknowledged write before the fault"]);
  assert.deepEqual(runFailures({ ...passing(), ackedAfterFault: 0 }), ["no acknowledged write after the fault"]);
  assert.deepEqual(runFailures({ ...passing(), lostWrites: 2, incrViolations: 1, connectionResets: 3 }), ["2 acknowledged writes lost", "1 INCR violations", "3 connection resets"]);
  const missed = { ...passing(), fault: "kill-primary-mid-checkpoint" as const, error: "missed: the kill did not land inside a checkpoint (...)" };
  assert.deepEqual(runFailures(missed), [missed.error]);
  assert.deepEqual(runFailures({ ...passing(), survivor: "none" }), ["no side serves the guest after the fault (status)"]);
  assert.deepEqual(runFailures({ ...passing(), survivor: "both" }), ["both sides say they are live at the run's end (status)"]);
});

test("runFailures: the wire judges split brain; the daemons' overlapping word alone does not fail a run", () => {
  assert.deepEqual(runFailures({ ...passing(), statusOverlapPolls: 4 }), [], "a frozen side reports its old mode for a moment: recorded, not judged");
  const both = { ...passing(), splitBrain: true, wire: { beforeFault: { h1: 900, h2: 0 }, afterFault: { h1: 12, h2: 400 }, sender: "both" as const } };
  assert.deepEqual(runFailures(both), ["split brain on the wire: after the fault the guest's frames came from both hosts (h1 12, h2 400)"]);
  const none = { ...passing(), wire: { beforeFault: { h1: 900, h2: 0 }, afterFault: { h1: 0, h2: 0 }, sender: "none" as const } };
  assert.deepEqual(runFailures(none), ["no host sent the guest's frames after the fault (wire)"]);
  const disagree = { ...passing(), survivor: "h1" };
  assert.deepEqual(runFailures(disagree), ["the wire and the daemons disagree: frames from h2, status says h1 serves"]);
  const unread: RunResult = { ...passing() };
  delete unread.wire;
  assert.deepEqual(runFailures(unread), ["the wire was not read"]);
  assert.deepEqual(runFailures({ ...unread, error: "setup: boom" }), ["setup: boom"], "a run that failed before the watch says why, once");
});

test("runFailures: a record from before the wire watch is judged by its own rules", () => {
  const old = { ...passing(), connectionResets: 2 } as Partial<RunResult> & RunResult;
  delete old.wire;
  delete (old as Partial<RunResult>).statusOverlapPolls;
  assert.deepEqual(runFailures(old), [], "resets were for the record then; no wire was read");
  assert.deepEqual(runFailures({ ...old, splitBrain: true }), ["split brain: both sides live at one poll (status)"]);
});
