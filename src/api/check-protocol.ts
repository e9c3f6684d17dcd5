/**
 * The `colo check` probe on the receiver's port (docs/operations.md
 * "colo check"): after the TLS-PSK handshake, a connection whose first
 * octet is `{` (a stream's is the toolstack header's "C") is a probe, not a
 * migration. JSON lines, one each way at a time:
 *
 *   → {"op":"check","version":1,"config":"<xl.cfg text>","configPath":"/abs/secondary.cfg"}
 *   ← {"ok":true,"facts":{...HostFacts}}
 *   → {"op":"echo","seq":0}            (up to MAX_ECHOES times: the RTT)
 *   ← {"echo":0}
 *   → {"op":"sink","maxBytes":N} and N raw octets (the bandwidth)
 *   ← {"sink":{"bytes":B,"ms":M}}      once N octets came, or SINK_MAX_MS after the line
 *   the receiver hangs up (also after {"op":"done"})
 *
 * A bad line gets {"ok":false,"error":"..."} and the connection is dropped,
 * like any bad peer (docs/migration.md "Bad peers on the port").
 */
import type { PredictedEngine } from "../vm/engine-descriptor.js";

export const CHECK_PROBE_VERSION = 1;
/** A probe's first octet; a stream's is "C" of "ColoTsFm" (src/state/toolstack-header.ts). */
export const PROBE_FIRST_OCTET = 0x7b;
/** The request carries a config: VM_CONFIG's text is at most 65 536 octets and its path 4096 (spec §3.6); JSON escaping may add some. */
export const MAX_PROBE_REQUEST_BYTES = 160 * 1024;
/** An echo, sink or done line. */
export const MAX_PROBE_LINE_BYTES = 256;
/** The facts line the receiver answers with. */
export const MAX_FACTS_LINE_BYTES = 64 * 1024;
export const MAX_ECHOES = 64;
/** The most a sink takes, and for how long after its line. */
export const MAX_SINK_BYTES = 32 * 2 ** 20;
export const SINK_MAX_MS = 2_000;
/** Each line of the probe must come within this of the previous answer. */
export const PROBE_LINE_TIMEOUT_MS = 5_000;
/** A probe connection is cut this long after its handshake, whatever it is doing. */
export const PROBE_MAX_MS = 20_000;

export interface ProbeRequest {
  op: "check";
  version: number;
  config: string;
  configPath: string;
}

export type ProbeLine = { op: "echo"; seq: number } | { op: "sink"; maxBytes: number } | { op: "done" };

/** How the receiver was started: what a primary's session must agree with. */
export interface ReceiverRole {
  /** `--colo`: waits for a replication session; else a live migration. */
  colo: boolean;
  /** `--arbiter` (HOST:PORT) and `--lease` ms, with --colo. */
  arbiter?: string;
  leaseMs?: number;
}

/** A file the config names, as the receiver's host sees it. */
export interface FileFact {
  role: "kernel" | "ramdisk" | "disk";
  /** Index in the config's disk list (disks only). */
  index?: number;
  path: string;
  exists: boolean;
  bytes?: number;
  /** Disks: the receiver can open it as the config asks (read-write for rw). */
  usable?: boolean;
  /** st_dev and st_ino (decimal): the same file as the primary's when the two hosts are one machine (the same boot id). */
  dev?: string;
  ino?: string;
  error?: string;
}

/** Free space where a replicated disk's spill files would go. */
export interface SpillFact {
  disk: number;
  dir: string;
  /** The folder statfs was asked of: `dir`, or its nearest existing parent (the daemon creates `dir`). */
  checked: string;
  /** st_dev of `checked`: disks on one filesystem share its space. */
  dev?: string;
  freeBytes?: number;
  /** tmpfs: spilled bytes take RAM. */
  tmpfs?: boolean;
  error?: string;
}

export type ConfigFact = { ok: true; name: string; engine: string; memoryMiB: number; disks: number } | { ok: false; error: string };

export interface HostFacts {
  version: number;
  host: string;
  netns?: string;
  /** /proc/sys/kernel/random/boot_id: equal on both sides when they are one machine (a lab). */
  bootId?: string;
  receiver: ReceiverRole;
  /** The config as this host parses it. */
  config: ConfigFact;
  /** The engine this host would start for it. */
  engine?: PredictedEngine;
  /** A VM of the config's name already runs here (its daemon's pid). */
  nameInUse?: { pid: number };
  memory: { availableBytes: number; totalBytes: number } | { error: string };
  /** Free space of /dev/shm, where the qemu engine keeps its RAM files (qemu only). */
  shm?: { freeBytes: number } | { error: string };
  files: FileFact[];
  spill: SpillFact[];
  bridges: { name: string; present: boolean }[];
}

export interface SinkAnswer {
  bytes: number;
  ms: number;
}

/** JSON.parse of an untrusted line into an object, or an Error saying why not. */
function objectOf(line: string, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    throw new Error(`${what} is not JSON: ${JSON.stringify(line.slice(0, 60))}`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error(`${what} is not a JSON object`);
  return v as Record<string, unknown>;
}

const isCount = (x: unknown, max = Number.MAX_SAFE_INTEGER): x is number => typeof x === "number" && Number.isInteger(x) && x >= 0 && x <= max;

export function parseProbeRequest(line: string): ProbeRequest {
  const v = objectOf(line, "the probe request");
  if (v.op !== "check") throw new Error(`the probe request's op is ${JSON.stringify(v.op)}, expected "check"`);
  if (v.version !== CHECK_PROBE_VERSION) throw new Error(`probe version ${JSON.stringify(v.version)}, this host speaks ${CHECK_PROBE_VERSION}`);
  if (typeof v.config !== "string" || v.config.length === 0 || v.config.length > 65_536) throw new Error('"config" must be the config text (1..65536 characters)');
  if (typeof v.configPath !== "string" || !v.configPath.startsWith("/") || v.configPath.length > 4096) throw new Error('"configPath" must be an absolute path');
  return { op: "check", version: v.version, config: v.config, configPath: v.configPath };
}

export function parseProbeLine(line: string): ProbeLine {
  const v = objectOf(line, "a probe line");
  switch (v.op) {
    case "echo":
      if (!isCount(v.seq, 1e9)) throw new Error('echo: "seq" must be a count');
      return { op: "echo", seq: v.seq };
    case "sink":
      if (!isCount(v.maxBytes, MAX_SINK_BYTES) || v.maxBytes === 0) throw new Error(`sink: "maxBytes" must be 1..${MAX_SINK_BYTES}`);
      return { op: "sink", maxBytes: v.maxBytes };
    case "done":
      return { op: "done" };
    default:
      throw new Error(`unknown probe op ${JSON.stringify(v.op)} (known: echo, sink, done)`);
  }
}

/** The receiver's first answer: its facts, or its refusal (thrown, with the receiver's words). */
export function parseFactsAnswer(line: string): HostFacts {
  const v = objectOf(line, "the receiver's answer");
  if (v.ok === false) throw new Error(typeof v.error === "string" ? v.error : "refused");
  const f = v.facts;
  if (v.ok !== true || typeof f !== "object" || f === null) throw new Error('the receiver\'s answer has no "facts"');
  const facts = f as Partial<HostFacts>;
  // The fields the rules read are checked for shape; unknown ones are ignored (a newer receiver may say more).
  if (!isCount(facts.version) || typeof facts.host !== "string") throw new Error("the receiver's facts lack version or host");
  if (typeof facts.receiver !== "object" || facts.receiver === null || typeof facts.receiver.colo !== "boolean") throw new Error("the receiver's facts lack receiver.colo");
  if (typeof facts.config !== "object" || facts.config === null || typeof facts.config.ok !== "boolean") throw new Error("the receiver's facts lack config");
  if (typeof facts.memory !== "object" || facts.memory === null) throw new Error("the receiver's facts lack memory");
  for (const k of ["files", "spill", "bridges"] as const) if (!Array.isArray(facts[k])) throw new Error(`the receiver's facts lack ${k}`);
  for (const file of facts.files ?? []) {
    if (typeof file !== "object" || file === null || typeof file.path !== "string" || typeof file.exists !== "boolean") throw new Error("the receiver's facts have a malformed file entry");
  }
  return facts as HostFacts;
}

export function parseEchoAnswer(line: string, seq: number): void {
  const v = objectOf(line, "the receiver's echo");
  if (v.ok === false) throw new Error(typeof v.error === "string" ? v.error : "refused");
  if (v.echo !== seq) throw new Error(`the receiver echoed ${JSON.stringify(v.echo)}, expected ${seq}`);
}

export function parseSinkAnswer(line: string): SinkAnswer {
  const v = objectOf(line, "the receiver's sink answer");
  if (v.ok === false) throw new Error(typeof v.error === "string" ? v.error : "refused");
  const s = v.sink as { bytes?: unknown; ms?: unknown } | undefined;
  if (typeof s !== "object" || s === null || !isCount(s.bytes) || typeof s.ms !== "number" || !(s.ms >= 0)) throw new Error('the receiver\'s sink answer lacks "bytes" or "ms"');
  return { bytes: s.bytes, ms: s.ms };
}
