/**
 * The per-VM control socket protocol: a Unix stream socket, one JSON object
 * per line each way. The client sends a request, the daemon answers with one
 * response line. `console` is different: after its `{"ok":true}` line the
 * connection carries raw console bytes in both directions until either side
 * closes it. See docs/control-socket.md.
 */

export type ControlRequest =
  | { op: "status" }
  | { op: "pause" }
  /** `force`: also a VM a migration left paused with its handover undecided (docs/migration.md). */
  | { op: "unpause"; force?: boolean }
  | { op: "destroy" }
  | { op: "console"; replay?: boolean }
  | { op: "console-tail"; bytes?: number }
  /** Save to `path` (absolute, on the daemon's host); the VM is destroyed afterwards unless `keepRunning`. */
  | { op: "save"; path: string; keepRunning?: boolean }
  /** Live-migrate to `host:port`; progress arrives as events; the VM is destroyed once the destination runs it. */
  | { op: "migrate"; host: string; port: number; keyFile: string; configPath?: string; arbiter?: string }
  /** Start replication to a secondary: Remus mode (`colo remus`) or COLO compare mode (`colo migrate --colo`). */
  | {
      op: "remus";
      host: string;
      port: number;
      keyFile: string;
      intervalMs: number;
      timeoutMs: number;
      heartbeatMs: number;
      mode?: "remus" | "compare";
      compareTimeoutMs?: number;
      minGapMs?: number;
      maxIntervalMs?: number;
      configPath?: string;
      /** The arbiter (lease.ts): "host:port" of `colo arbiter` or "etcd://host:port,..." (src/api/arbiter-address.ts), and the lease's ttl. */
      arbiter?: string;
      leaseMs?: number;
      /** After losing the secondary (running on unprotected), protect again toward this host: docs/operations.md "Automatic re-protection". */
      reprotect?: ReprotectTarget;
      /** Compare the disks by hash, whatever their activity logs say (`--full-disk-sync`; docs/operations.md "Re-protection"). */
      fullDiskSync?: boolean;
    }
  /** Operator failover: a secondary takes over, a primary stops replicating. */
  | { op: "failover" }
  /** Primary: take a checkpoint now (reason "operator"); with verifyDisks, hash the disk images while the PVM is paused in it. */
  | { op: "checkpoint"; verifyDisks?: boolean }
  /** SHA-256 of each replicated disk image as this side holds it (secondary: the PVM's disk as of the last checkpoint). */
  | { op: "disk-hashes" }
  /** The daemon's Prometheus metrics, as prom-client's getMetricsAsJSON() (src/api/metrics.ts; `colo serve` merges them). */
  | { op: "metrics" }
  /** `colo check`: the VM's facts and its guest's dirty rate over `sampleMs` (the guest runs on; daemon-check.ts). */
  | { op: "check"; sampleMs?: number };

/** Where a survivor asks for its next secondary (`--reprotect HOST[:PORT]`), and the config that secondary runs (`--reprotect-config`). */
export interface ReprotectTarget {
  host: string;
  port: number;
  configPath?: string;
}

export const CONTROL_OPS = ["status", "pause", "unpause", "destroy", "console", "console-tail", "save", "migrate", "remus", "failover", "checkpoint", "disk-hashes", "metrics", "check"] as const;

/**
 * Long requests (save, migrate) may send event lines before their response:
 * `{"event":{...}}`. Every other line is the response.
 */
export type ControlResponse = { ok: true; result?: unknown } | { ok: false; error: string };
export type ControlLine = ControlResponse | { event: unknown };

/** Largest request line the daemon accepts; longer input is a protocol error. */
export const MAX_REQUEST_BYTES = 64 * 1024;

/** Parses one request line from an untrusted peer; throws an Error saying what is wrong. */
export function parseRequest(line: string): ControlRequest {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw new Error(`request is not JSON: ${JSON.stringify(line.slice(0, 80))}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Error("request must be a JSON object");
  const op = (value as { op?: unknown }).op;
  if (typeof op !== "string") throw new Error('request has no "op" string');
  switch (op) {
    case "failover":
    case "disk-hashes":
    case "metrics":
      return { op };
    case "check": {
      const ms = (value as { sampleMs?: unknown }).sampleMs;
      if (ms !== undefined && (typeof ms !== "number" || !Number.isInteger(ms) || ms < 100 || ms > 10_000)) throw new Error('check: "sampleMs" must be an integer 100..10000');
      return ms === undefined ? { op } : { op, sampleMs: ms };
    }
    case "checkpoint": {
      const verify = (value as { verifyDisks?: unknown }).verifyDisks;
      if (verify !== undefined && typeof verify !== "boolean") throw new Error('checkpoint: "verifyDisks" must be a boolean');
      return verify === undefined ? { op } : { op, verifyDisks: verify };
    }
    case "remus": {
      const v = value as {
        host?: unknown;
        port?: unknown;
        keyFile?: unknown;
        intervalMs?: unknown;
        timeoutMs?: unknown;
        heartbeatMs?: unknown;
        mode?: unknown;
        compareTimeoutMs?: unknown;
        minGapMs?: unknown;
        maxIntervalMs?: unknown;
        configPath?: unknown;
        arbiter?: unknown;
        leaseMs?: unknown;
        reprotect?: unknown;
        fullDiskSync?: unknown;
      };
      if (typeof v.host !== "string" || v.host.length === 0 || v.host.length > 255) throw new Error('remus: "host" must be a host name or address');
      if (typeof v.port !== "number" || !Number.isInteger(v.port) || v.port < 1 || v.port > 65535) throw new Error('remus: "port" must be 1..65535');
      if (typeof v.keyFile !== "string" || !v.keyFile.startsWith("/")) throw new Error('remus: "keyFile" must be an absolute path');
      for (const [k, x, min, max] of [["intervalMs", v.intervalMs, 1, 3_600_000], ["timeoutMs", v.timeoutMs, 10, 3_600_000], ["heartbeatMs", v.heartbeatMs, 5, 3_600_000]] as const) {
        if (typeof x !== "number" || !Number.isInteger(x) || x < min || x > max) throw new Error(`remus: "${k}" must be an integer ${min}..${max}`);
      }
      if (v.mode !== undefined && v.mode !== "remus" && v.mode !== "compare") throw new Error('remus: "mode" must be "remus" or "compare"');
      const optional: Record<string, number> = {};
      if (v.arbiter !== undefined && (typeof v.arbiter !== "string" || v.arbiter.length === 0 || v.arbiter.length > 1024)) throw new Error('remus: "arbiter" must be "host:port" or "etcd://host:port[,host:port...]"');
      for (const [k, x, min, max] of [["compareTimeoutMs", v.compareTimeoutMs, 1, 3_600_000], ["minGapMs", v.minGapMs, 0, 3_600_000], ["maxIntervalMs", v.maxIntervalMs, 1, 86_400_000], ["leaseMs", v.leaseMs, 10, 600_000]] as const) {
        if (x === undefined) continue;
        if (typeof x !== "number" || !Number.isInteger(x) || x < min || x > max) throw new Error(`remus: "${k}" must be an integer ${min}..${max}`);
        optional[k] = x;
      }
      if (v.configPath !== undefined && (typeof v.configPath !== "string" || !v.configPath.startsWith("/"))) throw new Error('remus: "configPath" must be an absolute path');
      if (v.fullDiskSync !== undefined && typeof v.fullDiskSync !== "boolean") throw new Error('remus: "fullDiskSync" must be a boolean');
      const reprotect = v.reprotect === undefined ? undefined : parseReprotect(v.reprotect);
      return {
        op,
        host: v.host,
        port: v.port,
        keyFile: v.keyFile,
        intervalMs: v.intervalMs as number,
        timeoutMs: v.timeoutMs as number,
        heartbeatMs: v.heartbeatMs as number,
        ...(v.mode ? { mode: v.mode } : {}),
        ...optional,
        ...(typeof v.configPath === "string" ? { configPath: v.configPath } : {}),
        ...(typeof v.arbiter === "string" ? { arbiter: v.arbiter } : {}),
        ...(reprotect ? { reprotect } : {}),
        ...(v.fullDiskSync === true ? { fullDiskSync: true } : {}),
      };
    }
    case "status":
    case "pause":
    case "destroy":
      return { op };
    case "unpause": {
      const force = (value as { force?: unknown }).force;
      if (force !== undefined && typeof force !== "boolean") throw new Error('unpause: "force" must be a boolean');
      return force === undefined ? { op } : { op, force };
    }
    case "console": {
      const replay = (value as { replay?: unknown }).replay;
      if (replay !== undefined && typeof replay !== "boolean") throw new Error('console: "replay" must be a boolean');
      return replay === undefined ? { op } : { op, replay };
    }
    case "save": {
      const v = value as { path?: unknown; keepRunning?: unknown };
      if (typeof v.path !== "string" || !v.path.startsWith("/")) throw new Error('save: "path" must be an absolute path');
      if (v.keepRunning !== undefined && typeof v.keepRunning !== "boolean") throw new Error('save: "keepRunning" must be a boolean');
      return { op, path: v.path, ...(v.keepRunning !== undefined ? { keepRunning: v.keepRunning } : {}) };
    }
    case "migrate": {
      const v = value as { host?: unknown; port?: unknown; keyFile?: unknown; configPath?: unknown; arbiter?: unknown };
      if (typeof v.host !== "string" || v.host.length === 0 || v.host.length > 255) throw new Error('migrate: "host" must be a host name or address');
      if (typeof v.port !== "number" || !Number.isInteger(v.port) || v.port < 1 || v.port > 65535) throw new Error('migrate: "port" must be 1..65535');
      if (typeof v.keyFile !== "string" || !v.keyFile.startsWith("/")) throw new Error('migrate: "keyFile" must be an absolute path');
      if (v.configPath !== undefined && (typeof v.configPath !== "string" || !v.configPath.startsWith("/"))) {
        throw new Error('migrate: "configPath" must be an absolute path');
      }
      if (v.arbiter !== undefined && (typeof v.arbiter !== "string" || v.arbiter.length === 0 || v.arbiter.length > 1024)) {
        throw new Error('migrate: "arbiter" must be HOST[:PORT] or etcd://HOST:PORT[,HOST:PORT...]');
      }
      return {
        op,
        host: v.host,
        port: v.port,
        keyFile: v.keyFile,
        ...(v.configPath !== undefined ? { configPath: v.configPath } : {}),
        ...(v.arbiter !== undefined ? { arbiter: v.arbiter } : {}),
      };
    }
    case "console-tail": {
      const bytes = (value as { bytes?: unknown }).bytes;
      if (bytes !== undefined && (typeof bytes !== "number" || !Number.isInteger(bytes) || bytes < 0 || bytes > 65536)) {
        throw new Error('console-tail: "bytes" must be an integer 0..65536');
      }
      return bytes === undefined ? { op } : { op, bytes };
    }
    default:
      throw new Error(`unknown op ${JSON.stringify(op)} (known: ${CONTROL_OPS.join(", ")})`);
  }
}

export function parseResponse(line: string): ControlLine {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw new Error(`response is not JSON: ${JSON.stringify(line.slice(0, 80))}`);
  }
  if (typeof value !== "object" || value === null) throw new Error("response must be a JSON object");
  const v = value as { ok?: unknown; error?: unknown; result?: unknown; event?: unknown };
  if (v.event !== undefined) return { event: v.event };
  if (v.ok === true) return { ok: true, result: v.result };
  if (v.ok === false && typeof v.error === "string") return { ok: false, error: v.error };
  throw new Error('response has neither {"ok":true} nor {"ok":false,"error":...}');
}

/** A `remus` request's `reprotect`: an object with host, port and an optional absolute configPath. */
function parseReprotect(value: unknown): ReprotectTarget {
  if (typeof value !== "object" || value === null) throw new Error('remus: "reprotect" must be an object {host, port, configPath?}');
  const r = value as { host?: unknown; port?: unknown; configPath?: unknown };
  if (typeof r.host !== "string" || r.host.length === 0 || r.host.length > 255) throw new Error('remus: "reprotect.host" must be a host name or address');
  if (typeof r.port !== "number" || !Number.isInteger(r.port) || r.port < 1 || r.port > 65535) throw new Error('remus: "reprotect.port" must be 1..65535');
  if (r.configPath !== undefined && (typeof r.configPath !== "string" || !r.configPath.startsWith("/"))) throw new Error('remus: "reprotect.configPath" must be an absolute path');
  return { host: r.host, port: r.port, ...(typeof r.configPath === "string" ? { configPath: r.configPath } : {}) };
}
