// The verifying client (DESIGN.md §7): writes unique keys and values (and
// INCRs) over several connections, records every acknowledgement with its
// time, and after the run checks every acknowledged write against the
// surviving server. Connection resets are counted, never taken as data loss:
// a command without reply may or may not have been applied. Each connection
// reconnects with bounded backoff. What it reports: verify-report.ts; its
// CLI: verify-client.ts.
import { randomBytes } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { AckStats } from "./ack-stats.js";
import { checkIncrs, PROBLEM_LIST_CAP, type IncrEvent } from "./incr-check.js";
import { RespConnection, RespConnectionError } from "./resp-connection.js";
import { RespError, type RespValue } from "./resp.js";
import type { AckRecord, LostWrite, Progress, RunStats, VerifySummary } from "./verify-report.js";
import { monotonicMs } from "../sys/clock.js";

export interface VerifyingClientOptions {
  host: string;
  port?: number;
  /** Key prefix, unique per run (default `colo:v:<random>`). */
  prefix?: string;
  /** TCP connections, each with one command outstanding at a time (default 1). */
  connections?: number;
  /** Every k-th command of a connection is `INCR <prefix>:incr:<conn>`; 0: no INCRs (default 10). */
  incrEvery?: number;
  /** Reconnect (bounded backoff) after a connection error and go on (default true). */
  reconnect?: boolean;
  /** Commands sent in all, over all connections (default 1,000,000). */
  maxOps?: number;
  /** The run ends by itself after this long (default 60 s). */
  durationMs?: number;
  /** A command without reply in this time counts as unacknowledged and closes its connection (default 30 s). */
  commandTimeoutMs?: number;
  /** Default 5 s. */
  connectTimeoutMs?: number;
  /** Longest wait between reconnect attempts (default 1 s; the first retry waits 50 ms). */
  maxBackoffMs?: number;
}

const MGET_BATCH = 200;

interface ConnectionRecord {
  /** n of each acknowledged SET, and its time. */
  setN: number[];
  setAt: number[];
  incr: IncrEvent[];
  incrAt: number[];
  unackedSets: number;
}

export class VerifyingClient {
  readonly host: string;
  readonly port: number;
  readonly prefix: string;
  /** Part of every value: values of two runs never match by accident. */
  readonly nonce: string;
  private readonly connections: number;
  private readonly incrEvery: number;
  private readonly reconnect: boolean;
  private readonly maxOps: number;
  private readonly durationMs: number;
  private readonly commandTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly maxBackoffMs: number;

  private readonly records: ConnectionRecord[];
  private readonly stats = new AckStats();
  private readonly abort = new AbortController();
  private startedAt: number | null = null;
  private endedAtMs: number | null = null;
  private running: Promise<void> | null = null;
  private issued = 0;
  private acknowledgedOps = 0;
  private live = 0;
  private counts = { errorReplies: 0, commandTimeouts: 0, connectionResets: 0, connectTimeouts: 0, connectErrors: 0, reconnects: 0 };

  constructor(options: VerifyingClientOptions) {
    this.host = options.host;
    this.port = options.port ?? 6379;
    this.prefix = options.prefix ?? `colo:v:${randomBytes(6).toString("hex")}`;
    this.nonce = randomBytes(6).toString("hex");
    this.connections = options.connections ?? 1;
    this.incrEvery = options.incrEvery ?? 10;
    this.reconnect = options.reconnect ?? true;
    this.maxOps = options.maxOps ?? 1_000_000;
    this.durationMs = options.durationMs ?? 60_000;
    this.commandTimeoutMs = options.commandTimeoutMs ?? 30_000;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 5_000;
    this.maxBackoffMs = options.maxBackoffMs ?? 1_000;
    if (!Number.isInteger(this.connections) || this.connections < 1) {
      throw new RangeError(`connections: expected an integer >= 1, got ${this.connections}`);
    }
    if (!Number.isInteger(this.incrEvery) || this.incrEvery < 0) {
      throw new RangeError(`incrEvery: expected an integer >= 0, got ${this.incrEvery}`);
    }
    this.records = Array.from({ length: this.connections }, () => ({
      setN: [],
      setAt: [],
      incr: [],
      incrAt: [],
      unackedSets: 0,
    }));
  }

  setKey(conn: number, n: number): string {
    return `${this.prefix}:${conn}:${n}`;
  }

  setValue(conn: number, n: number): string {
    return `${this.nonce}:${conn}:${n}`;
  }

  incrKey(conn: number): string {
    return `${this.prefix}:incr:${conn}`;
  }

  /** Starts the connections (once); resolves when all have ended (limits, `stop()`, or errors without reconnect). */
  run(): Promise<void> {
    if (!this.running) {
      this.startedAt = monotonicMs();
      const loops = Array.from({ length: this.connections }, (_, conn) => this.loop(conn));
      this.running = Promise.all(loops).then(() => {
        this.endedAtMs = this.now();
      });
    }
    return this.running;
  }

  /** Ends the loops: each finishes (or times out) its outstanding command. */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.running;
  }

  /** ms since `run()` (monotonic). */
  now(): number {
    return this.startedAt === null ? 0 : monotonicMs() - this.startedAt;
  }

  progress(): Progress {
    const elapsedMs = this.now();
    const buckets = this.stats.opsPerSecond();
    const current = Math.floor(elapsedMs / 1000);
    return {
      elapsedMs,
      acknowledgedOps: this.acknowledgedOps,
      opsLastSecond: current >= 1 ? (buckets[current - 1] ?? 0) : (buckets[0] ?? 0),
      unacknowledged: this.records.reduce((s, r) => s + r.unackedSets + r.incr.filter((e) => !e.acked).length, 0),
      connectionResets: this.counts.connectionResets,
      commandTimeouts: this.counts.commandTimeouts,
      reconnects: this.counts.reconnects,
      connected: this.live,
    };
  }

  /** Every acknowledgement, per connection in order of sending. */
  acknowledgements(): AckRecord[] {
    const out: AckRecord[] = [];
    this.records.forEach((r, conn) => {
      r.setN.forEach((n, i) => {
        out.push({ op: "SET", conn, key: this.setKey(conn, n), value: this.setValue(conn, n), atMs: r.setAt[i]! });
      });
      let i = 0;
      for (const e of r.incr) {
        if (e.acked) out.push({ op: "INCR", conn, key: this.incrKey(conn), value: e.value, atMs: r.incrAt[i++]! });
      }
    });
    return out.sort((a, b) => a.atMs - b.atMs);
  }

  runStats(): RunStats {
    const durationMs = this.endedAtMs ?? this.now();
    return {
      prefix: this.prefix,
      connections: this.connections,
      durationMs: Math.round(durationMs),
      acknowledged: this.records.reduce((s, r) => s + r.setN.length, 0),
      unacknowledged: this.records.reduce((s, r) => s + r.unackedSets, 0),
      ...this.counts,
      maxAckGapMs: Math.round(this.stats.maxGapMs),
      maxAckGapAtMs: Math.round(this.stats.maxGapAtMs),
      lastAckAtMs: this.stats.lastAckAtMs === null ? null : Math.round(this.stats.lastAckAtMs),
      opsPerSecond: this.stats.opsPerSecond(durationMs),
    };
  }

  /**
   * Checks every acknowledged write against the (surviving) server over a
   * fresh connection: each acknowledged SET's value (MGET in batches), each
   * connection's INCR counter (incr-check.ts). Call after the run has ended.
   */
  async verify(host = this.host, port = this.port): Promise<VerifySummary> {
    if (this.running && this.endedAtMs === null) throw new Error("verify: the run has not ended (await stop() first)");
    const conn = await RespConnection.connect(host, port, this.connectTimeoutMs);
    try {
      let verified = 0;
      let lostCount = 0;
      const lost: LostWrite[] = [];
      const sets: { key: string; expected: string }[] = [];
      this.records.forEach((r, c) => {
        for (const n of r.setN) sets.push({ key: this.setKey(c, n), expected: this.setValue(c, n) });
      });
      for (let i = 0; i < sets.length; i += MGET_BATCH) {
        const batch = sets.slice(i, i + MGET_BATCH);
        const got = await this.mget(conn, batch.map((s) => s.key));
        batch.forEach((s, j) => {
          if (got[j] === s.expected) verified++;
          else {
            lostCount++;
            if (lost.length < PROBLEM_LIST_CAP) lost.push({ key: s.key, expected: s.expected, got: got[j] ?? null });
          }
        });
      }
      const counters = this.records.map((r, c) => ({ conn: c, key: this.incrKey(c), events: r.incr }));
      const finals = new Map<string, string | null>();
      const used = counters.filter((c) => c.events.length > 0);
      for (let i = 0; i < used.length; i += MGET_BATCH) {
        const keys = used.slice(i, i + MGET_BATCH).map((c) => c.key);
        const got = await this.mget(conn, keys);
        keys.forEach((k, j) => finals.set(k, got[j] ?? null));
      }
      const incr = checkIncrs(used, finals);
      return {
        ...this.runStats(),
        verifiedAgainst: `${host}:${port}`,
        verified,
        lostCount,
        lost,
        incr,
        ok: lostCount === 0 && incr.violations === 0,
      };
    } finally {
      conn.close();
    }
  }

  private async mget(conn: RespConnection, keys: string[]): Promise<(string | null)[]> {
    const reply = await conn.command(["MGET", ...keys], this.commandTimeoutMs);
    if (reply instanceof RespError) throw new Error(`verify: MGET: ${reply.message}`);
    if (!Array.isArray(reply) || reply.length !== keys.length) {
      throw new Error(`verify: MGET of ${keys.length} keys: unexpected reply ${JSON.stringify(reply)}`);
    }
    return reply.map((v) => (typeof v === "string" ? v : null));
  }

  private shouldStop(): boolean {
    return this.abort.signal.aborted || this.now() >= this.durationMs || this.issued >= this.maxOps;
  }

  private async pause(attempt: number): Promise<void> {
    const ms = Math.min(this.maxBackoffMs, 50 * 2 ** attempt);
    await delay(ms, undefined, { signal: this.abort.signal }).catch(() => {});
  }

  /** One connection: SETs (every k-th command an INCR), one outstanding at a time. */
  private async loop(conn: number): Promise<void> {
    const rec = this.records[conn]!;
    let connection: RespConnection | null = null;
    let generation = -1;
    let failedConnects = 0;
    let n = 0;
    let sent = 0;
    try {
      while (!this.shouldStop()) {
        if (!connection) {
          if (generation >= 0 && !this.reconnect) return;
          try {
            connection = await RespConnection.connect(this.host, this.port, this.connectTimeoutMs);
          } catch (err) {
            if (err instanceof RespConnectionError && err.code === "CONNECT_TIMEOUT") this.counts.connectTimeouts++;
            else this.counts.connectErrors++;
            if (!this.reconnect) return;
            await this.pause(failedConnects++);
            continue;
          }
          this.live++;
          generation++;
          if (generation > 0) this.counts.reconnects++;
          failedConnects = 0;
          continue; // the limits again: the connect may have taken a while
        }
        this.issued++;
        sent++;
        const isIncr = this.incrEvery > 0 && sent % this.incrEvery === 0;
        const key = isIncr ? this.incrKey(conn) : this.setKey(conn, n);
        const args = isIncr ? ["INCR", key] : ["SET", key, this.setValue(conn, n)];
        let reply: RespValue;
        try {
          reply = await connection.command(args, this.commandTimeoutMs);
        } catch (err) {
          if (isIncr) {
            rec.incr.push({ acked: false, generation });
          } else {
            rec.unackedSets++;
            n++;
          }
          if (err instanceof RespConnectionError && err.code === "TIMEOUT") this.counts.commandTimeouts++;
          else this.counts.connectionResets++;
          connection.close();
          connection = null;
          this.live--;
          continue;
        }
        const atMs = this.now();
        if (!isIncr) n++;
        if (reply instanceof RespError) {
          this.counts.errorReplies++;
          await this.pause(0);
          continue;
        }
        if (isIncr) {
          if (typeof reply !== "number") {
            this.counts.errorReplies++;
            continue;
          }
          rec.incr.push({ acked: true, value: reply, generation });
          rec.incrAt.push(atMs);
        } else {
          rec.setN.push(n - 1);
          rec.setAt.push(atMs);
        }
        this.acknowledgedOps++;
        this.stats.record(atMs);
      }
    } finally {
      if (connection) {
        connection.close();
        this.live--;
      }
    }
  }
}
