/**
 * The daemon's metrics (metrics.ts) fed as the daemon feeds them: a
 * session's ReplicationStats tells of checkpoints and failovers, and each
 * scrape reads a status object shaped as `colo status` answers.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ReplicationStats } from "../colo/replication-stats.js";
import { DaemonMetrics, type MetricsJson } from "./metrics.js";

/** Every series as `name{label="value",...}` (labels sorted, vm left out) → value; asserts each carries vm. */
function series(json: MetricsJson, vm: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const metric of json) {
    for (const v of metric.values) {
      const { vm: label, ...rest } = v.labels as Record<string, string | number>;
      assert.equal(label, vm, `${metric.name} carries vm=${vm}`);
      const labels = Object.entries(rest)
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([k, x]) => `${k}="${x}"`)
        .join(",");
      const name = (v as { metricName?: string }).metricName ?? metric.name;
      out.set(labels ? `${name}{${labels}}` : name, v.value);
    }
  }
  return out;
}

function primaryStatus(over: { released?: number; divergences?: number; diskBytes?: number; renewals?: number } = {}): Record<string, unknown> {
  return {
    name: "guest",
    state: "running",
    engine: "emu",
    eventLoopDelay: { maxMs: 195, p99Ms: 30.5, meanMs: 1, samples: 100, resolutionMs: 10 },
    replication: {
      mode: "primary",
      replication: "compare",
      peer: "10.77.1.2:8002",
      checkpoints: 3,
      msSinceHeard: 40,
      discardedCheckpoints: 0,
      lease: { holder: "h1:1", solo: false, held: true, validForMs: 750, renewals: over.renewals ?? 10, failures: 1 },
    },
    heldOutput: {
      heldFrames: 4,
      heldBytes: 6000,
      secondaryQueuedBytes: 120,
      flows: 2,
      releasedMatched: over.released ?? 100,
      releasedUncompared: 5,
      releasedAtCheckpoint: 7,
      releasedAtFailover: 0,
      droppedSecondary: 1,
      droppedPrimaryOverflow: 0,
      divergences: { payload: over.divergences ?? 2, length: 0, timeout: 1, overflow: 0, "secondary-extra": 0 },
    },
    proxy: { mirroredFrames: 50, disks: [{ disk: 0, lastSeq: 9, writes: 9, bytes: over.diskBytes ?? 36_864 }] },
  };
}

test("metrics: a compare-mode primary's checkpoints, pauses, phases, pages, held output, compare counters, lease, disk channel, loop delay; all labelled vm", async () => {
  const m = new DaemonMetrics();
  m.setVm("guest");
  const stats = new ReplicationStats("primary", "10.77.1.2:8002", "compare");
  m.watch(stats);
  m.watch(stats); // watched once
  let status = primaryStatus();
  m.setSource(() => ({ session: stats, status }));
  stats.recordCheckpoint({ pauseMs: 900, pages: 40_000, bytes: 160_000_000, reason: "initial" });
  stats.recordCheckpoint({ pauseMs: 40, pages: 30, bytes: 130_000, reason: "payload", phasesMs: { pause: 1.5, pages: 20, svmReady: 12 } });
  stats.recordCheckpoint({ pauseMs: 60, pages: 300, bytes: 1_300_000, reason: "timeout", phasesMs: { pause: 2, pages: 30, svmReady: 20 } });

  let s = series(await m.json(), "guest");
  assert.equal(s.get('colo_checkpoints_total{reason="initial"}'), 1);
  assert.equal(s.get('colo_checkpoints_total{reason="payload"}'), 1);
  assert.equal(s.get('colo_checkpoints_total{reason="timeout"}'), 1, "compare-timeout checkpoints");
  assert.equal(s.get('colo_checkpoints_total{reason="periodic"}'), 0, "every reason has a series from the start");
  // Checkpoint 0 (the migration's last round) is not a pause like the others.
  assert.equal(s.get("colo_checkpoint_pause_seconds_count"), 2);
  assert.ok(Math.abs((s.get("colo_checkpoint_pause_seconds_sum") ?? 0) - 0.1) < 1e-9);
  assert.equal(s.get('colo_checkpoint_pause_seconds_bucket{le="0.05"}'), 1);
  assert.equal(s.get('colo_checkpoint_pause_seconds_bucket{le="0.1"}'), 2);
  assert.equal(s.get('colo_checkpoint_phase_seconds_count{phase="svmReady"}'), 2);
  assert.ok(Math.abs((s.get('colo_checkpoint_phase_seconds_sum{phase="pages"}') ?? 0) - 0.05) < 1e-9);
  assert.equal(s.get('colo_checkpoint_dirty_pages_bucket{le="64"}'), 1);
  assert.equal(s.get('colo_checkpoint_dirty_pages_bucket{le="+Inf"}'), 2);
  assert.equal(s.get("colo_checkpoint_bytes_total"), 1_430_000);
  assert.equal(s.get('colo_replication_mode{mode="primary"}'), 1);
  assert.equal(s.get('colo_replication_mode{mode="unprotected"}'), 0);
  assert.equal(s.get('colo_peer_state{peer="10.77.1.2:8002",replication="compare",state="connected"}'), 1);
  assert.equal(s.get("colo_peer_last_heard_seconds"), 0.04);
  assert.equal(s.get("colo_held_frames"), 4);
  assert.equal(s.get("colo_held_bytes"), 6000);
  assert.equal(s.get('colo_output_released_frames_total{cause="matched"}'), 100);
  assert.equal(s.get('colo_output_released_frames_total{cause="uncompared"}'), 5);
  assert.equal(s.get('colo_output_released_frames_total{cause="checkpoint"}'), 7);
  assert.equal(s.get('colo_output_dropped_frames_total{side="secondary"}'), 1);
  assert.equal(s.get('colo_compare_divergences_total{reason="payload"}'), 2);
  assert.equal(s.get("colo_compare_flows"), 2);
  assert.equal(s.get("colo_mirrored_frames_total"), 50);
  assert.equal(s.get('colo_disk_channel_bytes_total{direction="sent",disk="0"}'), 36_864);
  assert.equal(s.get('colo_disk_channel_writes_total{direction="sent",disk="0"}'), 9);
  assert.equal(s.get("colo_lease_held"), 1);
  assert.equal(s.get("colo_lease_solo"), 0);
  assert.equal(s.get("colo_lease_valid_seconds"), 0.75);
  assert.equal(s.get("colo_lease_renewals_total"), 10);
  assert.equal(s.get("colo_lease_failures_total"), 1);
  assert.equal(s.get("colo_event_loop_delay_max_seconds"), 0.195);
  assert.equal(s.get("colo_event_loop_delay_p99_seconds"), 0.0305);
  assert.equal(s.get('colo_vm_info{engine="emu",state="running"}'), 1);

  // The next scrape adds what the status's counts grew by; a count that did not grow adds nothing.
  status = primaryStatus({ released: 130, divergences: 3, diskBytes: 40_960, renewals: 12 });
  s = series(await m.json(), "guest");
  assert.equal(s.get('colo_output_released_frames_total{cause="matched"}'), 130);
  assert.equal(s.get('colo_compare_divergences_total{reason="payload"}'), 3);
  assert.equal(s.get('colo_disk_channel_bytes_total{direction="sent",disk="0"}'), 40_960);
  assert.equal(s.get("colo_lease_renewals_total"), 12);
  assert.equal(s.get("colo_mirrored_frames_total"), 50);

  // A new session (replication started again) counts from zero: the counters go on from where they were.
  const next = new ReplicationStats("primary", "10.77.1.2:8002", "compare");
  m.watch(next);
  status = primaryStatus({ released: 20, divergences: 1, diskBytes: 4096, renewals: 1 });
  m.setSource(() => ({ session: next, status }));
  next.recordCheckpoint({ pauseMs: 800, pages: 40_000, bytes: 1, reason: "initial" });
  s = series(await m.json(), "guest");
  assert.equal(s.get('colo_output_released_frames_total{cause="matched"}'), 150);
  assert.equal(s.get('colo_compare_divergences_total{reason="payload"}'), 4);
  assert.equal(s.get('colo_disk_channel_bytes_total{direction="sent",disk="0"}'), 45_056);
  assert.equal(s.get("colo_lease_renewals_total"), 13);
  assert.equal(s.get('colo_checkpoints_total{reason="initial"}'), 2);

  // The text format: counters end in _total, every line carries vm.
  const text = await m.text();
  assert.match(text, /^# TYPE colo_checkpoints_total counter$/m);
  assert.match(text, /^colo_checkpoints_total\{reason="payload",vm="guest"\} 1$/m);
  assert.match(text, /^colo_checkpoint_pause_seconds_bucket\{le="0\.05",vm="guest"\} 1$/m);
});

test("metrics: a secondary's applied checkpoints and disks; its takeover is a failover; the peer is lost then", async () => {
  const m = new DaemonMetrics();
  m.setVm("guest");
  const stats = new ReplicationStats("secondary", "10.77.1.1:40000");
  m.watch(stats);
  const replication = () => ({ ...(stats.snapshot() as Record<string, unknown>) });
  const status = () => ({
    name: "guest",
    state: "paused",
    engine: "qemu",
    replication: replication(),
    ...(stats.mode === "secondary" ? { proxy: { framesIn: 4, framesOut: 3, disks: [{ disk: 0, mode: "replicating", primaryWrites: 3, primaryBytes: 12_288, pendingBytes: 4096, overlayBytes: 8192 }] } } : {}),
  });
  m.setSource(() => ({ session: stats, status: status() }));
  stats.recordCheckpoint({ checkpoint: 1, pauseMs: 0, pages: 12, bytes: 8192, phasesMs: { applyPages: 0.2, loadState: 3 } });
  stats.recordCheckpoint({ checkpoint: 2, pauseMs: 0, pages: 2, bytes: 0, phasesMs: { applyPages: 0.1, loadState: 2 } });
  let s = series(await m.json(), "guest");
  assert.equal(s.get("colo_checkpoints_applied_total"), 2);
  assert.equal(s.get('colo_checkpoints_total{reason="payload"}'), 0, "a secondary counts no reasons");
  assert.equal(s.get("colo_checkpoint_pause_seconds_count"), 0);
  assert.equal(s.get("colo_checkpoint_dirty_pages_count"), 2);
  assert.equal(s.get('colo_checkpoint_phase_seconds_count{phase="loadState"}'), 2);
  assert.equal(s.get('colo_disk_channel_bytes_total{direction="received",disk="0"}'), 12_288);
  assert.equal(s.get('colo_disk_pending_bytes{disk="0"}'), 4096);
  assert.equal(s.get('colo_disk_overlay_bytes{disk="0"}'), 8192);
  assert.equal(s.get('colo_replication_mode{mode="secondary"}'), 1);
  assert.equal(s.get('colo_peer_state{peer="10.77.1.1:40000",replication="remus",state="connected"}'), 1);

  stats.failover("secondary", "no word from the primary for 1000 ms");
  s = series(await m.json(), "guest");
  assert.equal(s.get('colo_failovers_total{outcome="unprotected",role="secondary"}'), 1);
  assert.equal(s.get('colo_replication_mode{mode="unprotected"}'), 1);
  assert.equal(s.get('colo_replication_mode{mode="secondary"}'), 0);
  assert.equal(s.get('colo_peer_state{peer="10.77.1.1:40000",replication="remus",state="lost"}'), 1);
  assert.equal(s.get('colo_peer_state{peer="10.77.1.1:40000",replication="remus",state="connected"}'), undefined, "a gauge's old label set goes");
  assert.equal(s.get('colo_disk_pending_bytes{disk="0"}'), undefined, "no disks shown after the takeover: no series");
  assert.equal(s.get('colo_disk_channel_bytes_total{direction="received",disk="0"}'), 12_288, "a counter stays");
});

test("metrics: a VM that never replicated is unprotected; its daemon still answers the loop delay", async () => {
  const m = new DaemonMetrics();
  m.setVm("plain");
  m.setSource(() => ({ session: undefined, status: { name: "plain", state: "running", engine: "emu", eventLoopDelay: { maxMs: 12, p99Ms: 1 } } }));
  const s = series(await m.json(), "plain");
  assert.equal(s.get('colo_replication_mode{mode="unprotected"}'), 1);
  assert.equal([...s.keys()].filter((k) => k.startsWith("colo_peer_state")).length, 0);
  assert.equal(s.get("colo_event_loop_delay_max_seconds"), 0.012);
  assert.equal(s.get("colo_held_frames"), 0);
});
