/**
 * A VM daemon's Prometheus metrics (issue 14; docs/operations.md
 * "Metrics"): one prom-client Registry per daemon, every series labelled
 * `vm=<name>` (a default label), answered on the control socket's `metrics`
 * request as `getMetricsAsJSON()`; `colo serve` (src/serve) merges every
 * daemon's of the host into one `/metrics`.
 *
 * Two kinds of update:
 * - as things happen: each checkpoint (reason, pause, phases, pages, bytes)
 *   and failover, told by the session's ReplicationStats (`watch`):
 *   histograms need every observation;
 * - at each scrape, from the daemon's status (the object `colo status`
 *   shows): gauges (mode, peer, held output, lease, heartbeat age, the
 *   event loop's delay), and the counters the replication code keeps
 *   already (frames released by compare, divergences, disk-channel bytes,
 *   lease renewals), added by what they grew since the last scrape, per
 *   session: no second count to disagree with `colo status`, nothing
 *   done per frame.
 */
import { Counter, Gauge, Histogram, Registry, type MetricObjectWithValues, type MetricValue } from "prom-client";
import { CHECKPOINT_REASONS } from "../colo/checkpoint-policy.js";
import { DIVERGENCE_REASONS } from "../colo/net/comparator.js";
import type { CheckpointRecord, FailoverEvent, ReplicationMode, ReplicationStats } from "../colo/replication-stats.js";

/** What the daemon gives at each scrape. */
export interface MetricsSource {
  /** The replication session the status's counters belong to (its ReplicationStats); none when the VM never replicated. */
  session: object | undefined;
  /** The daemon's status, as the control socket's `status` answers. */
  status: Record<string, unknown>;
}

export type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

/** Every mode, for `colo_replication_mode` (a state set: 1 for the current one, 0 for the others). */
const MODES: Record<ReplicationMode, true> = { primary: true, secondary: true, unprotected: true, fenced: true, "stepped-down": true, "handed-over": true };

/** Checkpoint pauses here: 40-300 ms (bench/README.md); seconds. */
const PAUSE_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5];
/** A phase of the pause: from a fraction of a ms (resume) to the SVM's load (qemu: seconds). */
const PHASE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
/** 4 KiB pages per checkpoint: a handful on an idle guest, tens of thousands for a whole 160 MiB guest. */
const PAGE_BUCKETS = [16, 64, 256, 1024, 4096, 16384, 65536, 262144];

type Fields = Record<string, unknown>;
const fields = (v: unknown): Fields | undefined => (typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Fields) : undefined);
const num = (v: unknown): number | undefined => (typeof v === "number" && Number.isFinite(v) ? v : undefined);
const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);
const list = (v: unknown): Fields[] => (Array.isArray(v) ? v.map(fields).filter((f): f is Fields => f !== undefined) : []);
const ms = (v: unknown): number | undefined => {
  const n = num(v);
  return n === undefined ? undefined : n / 1000;
};

/**
 * Cumulative counts a session keeps (status counters), turned into
 * Prometheus counters: each scrape adds what a count grew since the last
 * one of the same session; a new session's counts add from zero.
 */
class SessionCounts {
  private readonly seen = new WeakMap<object, Map<Counter<string>, Map<string, number>>>();

  add(counter: Counter<string>, session: object, labels: Record<string, string>, value: number | undefined): void {
    if (value === undefined || value < 0) return;
    let bySession = this.seen.get(session);
    if (!bySession) this.seen.set(session, (bySession = new Map()));
    let byLabels = bySession.get(counter);
    if (!byLabels) bySession.set(counter, (byLabels = new Map()));
    const key = JSON.stringify(labels);
    const last = byLabels.get(key) ?? 0;
    if (value > last) counter.inc(labels, value - last);
    byLabels.set(key, Math.max(last, value));
  }
}

export class DaemonMetrics {
  readonly registry = new Registry();
  private readonly counts = new SessionCounts();
  private readonly watched = new WeakSet<ReplicationStats>();
  private source: () => MetricsSource = () => ({ session: undefined, status: {} });

  private readonly c = {
    checkpoints: this.counter("colo_checkpoints_total", "Checkpoints this primary completed, by the reason the policy counted (initial: checkpoint 0; timeout: the compare timeout)", ["reason"]),
    applied: this.counter("colo_checkpoints_applied_total", "Checkpoints this secondary applied (after checkpoint 0)"),
    checkpointBytes: this.counter("colo_checkpoint_bytes_total", "Forward-stream bytes of the primary's checkpoints after checkpoint 0"),
    failovers: this.counter("colo_failovers_total", "Ends of protection on this side (takeover, going alone, fence, step-down, hand-over), by role and the mode it left this side in", ["role", "outcome"]),
    released: this.counter("colo_output_released_frames_total", "Guest frames the primary released, by cause (matched: the SVM sent the same; uncompared: non-IP, TCP retransmissions; checkpoint; failover)", ["cause"]),
    dropped: this.counter("colo_output_dropped_frames_total", "Frames dropped by output commit: the PVM's past the held limits, the SVM's after a divergence or past its queue", ["side"]),
    divergences: this.counter("colo_compare_divergences_total", "Differences the comparator found between the VMs' output, by reason", ["reason"]),
    mirrored: this.counter("colo_mirrored_frames_total", "Inbound frames the primary mirrored to the secondary"),
    diskBytes: this.counter("colo_disk_channel_bytes_total", "Disk-write bytes on the replication channel (primary: sent; secondary: received)", ["disk", "direction"]),
    diskWrites: this.counter("colo_disk_channel_writes_total", "Disk writes on the replication channel (primary: sent; secondary: received)", ["disk", "direction"]),
    renewals: this.counter("colo_lease_renewals_total", "Arbiter lease renewals granted"),
    leaseFailures: this.counter("colo_lease_failures_total", "Arbiter lease requests that failed or were refused"),
    discarded: this.counter("colo_discarded_checkpoints_total", "Checkpoints a secondary received in part when its primary was lost, never applied"),
  };

  private readonly h = {
    pause: new Histogram({ name: "colo_checkpoint_pause_seconds", help: "How long the primary's VM was paused for a checkpoint (after checkpoint 0)", buckets: PAUSE_BUCKETS, registers: [this.registry] }),
    phase: new Histogram({
      name: "colo_checkpoint_phase_seconds",
      help: "Where a checkpoint went, by phase (primary: new, svmSuspended with the PVM running; pause, pvmDirty, pages, saveState, resume while it is paused; send, svmReady after; secondary: applyPages, loadState)",
      labelNames: ["phase"],
      buckets: PHASE_BUCKETS,
      registers: [this.registry],
    }),
    pages: new Histogram({ name: "colo_checkpoint_dirty_pages", help: "Dirty pages per checkpoint (primary: sent, the union of both VMs' dirty pages; secondary: applied), after checkpoint 0", buckets: PAGE_BUCKETS, registers: [this.registry] }),
  };

  private readonly g = {
    vm: this.gauge("colo_vm_info", "The VM: its engine and state (value 1)", ["engine", "state"]),
    mode: this.gauge("colo_replication_mode", "Replication mode of this side (1: the current one; unprotected when not replicating)", ["mode"]),
    peer: this.gauge("colo_peer_state", "The replication peer (value 1): connected while replicating, lost once protection ended", ["peer", "replication", "state"]),
    heard: this.gauge("colo_peer_last_heard_seconds", "Time since the peer's last record (heartbeat age)"),
    heldFrames: this.gauge("colo_held_frames", "Guest frames the primary holds until they may leave"),
    heldBytes: this.gauge("colo_held_bytes", "Bytes of the held frames"),
    svmQueued: this.gauge("colo_compare_secondary_queued_bytes", "SVM output not yet matched by the PVM's"),
    flows: this.gauge("colo_compare_flows", "Flows the comparator tracks"),
    diskPending: this.gauge("colo_disk_pending_bytes", "Secondary: the primary's writes held until the next checkpoint", ["disk"]),
    diskOverlay: this.gauge("colo_disk_overlay_bytes", "Secondary: the SVM's own writes kept in its overlay until the next checkpoint", ["disk"]),
    leaseHeld: this.gauge("colo_lease_held", "1 while this side holds the arbiter's lease"),
    leaseSolo: this.gauge("colo_lease_solo", "1 when the lease is marked solo (this side may run alone)"),
    leaseLeft: this.gauge("colo_lease_valid_seconds", "Time left on the lease, by this side's own shorter view"),
    loopMax: this.gauge("colo_event_loop_delay_max_seconds", "The longest the daemon's event loop ran late since it started (heartbeats, lease renewals and watchdogs wait that long)"),
    loopP99: this.gauge("colo_event_loop_delay_p99_seconds", "The 99th percentile of the event loop's lateness since the daemon started"),
  };

  constructor() {
    for (const reason of ["initial", ...CHECKPOINT_REASONS]) this.c.checkpoints.inc({ reason }, 0);
    for (const reason of DIVERGENCE_REASONS) this.c.divergences.inc({ reason }, 0);
  }

  /** The daemon's VM: every series is labelled with it. */
  setVm(name: string): void {
    this.registry.setDefaultLabels({ vm: name });
  }

  /** Where the scrape-time series come from. */
  setSource(source: () => MetricsSource): void {
    this.source = source;
  }

  /** A replication session's checkpoints and failovers are counted as they happen from now on. */
  watch(stats: ReplicationStats): void {
    if (this.watched.has(stats)) return;
    this.watched.add(stats);
    stats.observe({ checkpoint: (record, phases) => this.checkpoint(record, phases), failover: (event, mode) => this.failover(event, mode) });
  }

  /** The metrics as the control socket answers them (`colo serve` merges them). */
  async json(): Promise<MetricsJson> {
    this.update(this.source());
    return this.registry.getMetricsAsJSON();
  }

  /** The metrics in Prometheus's text format (tests; `colo serve` serves the merged ones). */
  async text(): Promise<string> {
    this.update(this.source());
    return this.registry.metrics();
  }

  private checkpoint(record: CheckpointRecord, phases: Record<string, number> | undefined): void {
    const primary = record.reason !== undefined; // only a primary knows why
    if (primary) this.c.checkpoints.inc({ reason: record.reason ?? "unknown" });
    else this.c.applied.inc();
    if (record.reason === "initial") return; // checkpoint 0 is the live migration's last round: not a pause like the others
    if (primary) {
      this.h.pause.observe(record.pauseMs / 1000);
      this.c.checkpointBytes.inc(record.bytes);
    }
    this.h.pages.observe(record.pages);
    for (const [phase, phaseMs] of Object.entries(phases ?? {})) this.h.phase.observe({ phase }, phaseMs / 1000);
  }

  private failover(event: FailoverEvent, mode: ReplicationMode): void {
    this.c.failovers.inc({ role: event.role, outcome: mode });
  }

  /** The scrape-time series, from the daemon's status. */
  private update({ session, status }: MetricsSource): void {
    for (const g of Object.values(this.g)) g.reset();
    const engine = str(status.engine);
    const state = str(status.state);
    if (engine !== undefined && state !== undefined) this.g.vm.set({ engine, state }, 1);
    const loop = fields(status.eventLoopDelay);
    this.g.loopMax.set(ms(loop?.maxMs) ?? 0);
    this.g.loopP99.set(ms(loop?.p99Ms) ?? 0);

    const replication = fields(status.replication);
    const mode = str(replication?.mode) ?? "unprotected";
    for (const m of Object.keys(MODES)) this.g.mode.set({ mode: m }, m === mode ? 1 : 0);
    if (!replication || !session) return;
    const peer = str(replication.peer);
    if (peer !== undefined) this.g.peer.set({ peer, replication: str(replication.replication) ?? "remus", state: mode === "primary" || mode === "secondary" ? "connected" : "lost" }, 1);
    this.g.heard.set(ms(replication.msSinceHeard) ?? 0);
    this.counts.add(this.c.discarded, session, {}, num(replication.discardedCheckpoints));
    const lease = fields(replication.lease);
    if (lease) {
      this.g.leaseHeld.set(lease.held === true ? 1 : 0);
      this.g.leaseSolo.set(lease.solo === true ? 1 : 0);
      this.g.leaseLeft.set(ms(lease.validForMs) ?? 0);
      this.counts.add(this.c.renewals, session, {}, num(lease.renewals));
      this.counts.add(this.c.leaseFailures, session, {}, num(lease.failures));
    }
    this.output(session, fields(status.heldOutput));
    this.proxy(session, fields(status.proxy));
  }

  /** `heldOutput`: Remus mode's output buffer, or compare mode's comparator. */
  private output(session: object, held: Fields | undefined): void {
    if (!held) return;
    this.g.heldFrames.set(num(held.heldFrames) ?? 0);
    this.g.heldBytes.set(num(held.heldBytes) ?? 0);
    const add = (counter: Counter<string>, labels: Record<string, string>, value: unknown) => this.counts.add(counter, session, labels, num(value));
    if (held.releasedMatched === undefined) {
      // Remus: every frame leaves with its checkpoint (or all at once when the secondary is lost).
      add(this.c.released, { cause: "checkpoint" }, held.releasedFrames);
      add(this.c.dropped, { side: "primary" }, held.droppedFrames);
      return;
    }
    add(this.c.released, { cause: "matched" }, held.releasedMatched);
    add(this.c.released, { cause: "uncompared" }, held.releasedUncompared);
    add(this.c.released, { cause: "checkpoint" }, held.releasedAtCheckpoint);
    add(this.c.released, { cause: "failover" }, held.releasedAtFailover);
    add(this.c.dropped, { side: "primary" }, held.droppedPrimaryOverflow);
    add(this.c.dropped, { side: "secondary" }, held.droppedSecondary);
    this.g.svmQueued.set(num(held.secondaryQueuedBytes) ?? 0);
    this.g.flows.set(num(held.flows) ?? 0);
    const divergences = fields(held.divergences) ?? {};
    for (const [reason, n] of Object.entries(divergences)) add(this.c.divergences, { reason }, n);
  }

  /** `proxy`: the primary's mirror and disk forwarder, or the secondary's proxy and disks. */
  private proxy(session: object, proxy: Fields | undefined): void {
    if (!proxy) return;
    this.counts.add(this.c.mirrored, session, {}, num(proxy.mirroredFrames));
    for (const d of list(proxy.disks)) {
      const disk = String(num(d.disk) ?? "?");
      if (d.primaryBytes !== undefined) {
        this.counts.add(this.c.diskBytes, session, { disk, direction: "received" }, num(d.primaryBytes));
        this.counts.add(this.c.diskWrites, session, { disk, direction: "received" }, num(d.primaryWrites));
        this.g.diskPending.set({ disk }, num(d.pendingBytes) ?? 0);
        this.g.diskOverlay.set({ disk }, num(d.overlayBytes) ?? 0);
      } else {
        this.counts.add(this.c.diskBytes, session, { disk, direction: "sent" }, num(d.bytes));
        this.counts.add(this.c.diskWrites, session, { disk, direction: "sent" }, num(d.writes));
      }
    }
  }

  private counter(name: string, help: string, labelNames: string[] = []): Counter<string> {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  private gauge(name: string, help: string, labelNames: string[] = []): Gauge<string> {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }
}
