/**
 * `colo check`'s verdicts on the machine (docs/operations.md "colo check"):
 * pure functions of the facts both hosts gave (CheckFacts), one per check,
 * each failing exactly where the protection would (the migration's own
 * comparisons: machineMismatch, engineCompatMismatch; the secondary's disk
 * rules of src/colo/secondary-disks.ts). The host's resources, the link
 * and the arbiter: check-rules-host.ts.
 */
import type { VmConfig } from "../config/index.js";
import { engineCompatMismatch, machineMismatch } from "../state/machine-transfer.js";
import type { FileFact, HostFacts } from "./check-protocol.js";
import type { ProbeResult } from "./check-probe-client.js";
import { fail, ok, size, warn, type CheckResult } from "./check-result.js";
import type { VmFacts } from "./daemon-check.js";
import type { ConfigSource } from "./image-io.js";

/** A median round trip above this is warned about: COLO wants both hosts on one LAN. */
export const RTT_WARN_MS = 10;

/** An arbiter lease as the arbiter lists it. */
export interface LeaseEntry {
  vm: string;
  holder: string;
  solo: boolean;
  remainingMs: number;
}

export interface CheckFacts {
  key: { path: string; bytes: number; mode: number };
  vm: VmFacts;
  /** The config the secondary gets (-C, or the VM's own when `given` is false), as this host parses it. */
  secondary: { source: ConfigSource; config: VmConfig; given: boolean };
  /** HOST:PORT of the receiver, and what probing it gave. */
  to: string;
  peer: { ok: true; probe: ProbeResult } | { ok: false; code: string; message: string };
  /** --arbiter: where, the lease ttl, and whether it answered. */
  /** --arbiter (canonical: HOST:PORT or etcd://...): where, the lease ttl, whether it answered, its leases (the built-in arbiter lists them; etcd does not). */
  arbiter?: { at: string; leaseMs: number; reach: { ok: true; rttMs: number; leases?: LeaseEntry[] } | { ok: false; error: string } };
}

export function keyCheck(f: CheckFacts): CheckResult {
  return ok("key", `${f.key.path}: ${f.key.bytes} bytes, mode ${(f.key.mode & 0o777).toString(8)}`, { path: f.key.path, bytes: f.key.bytes });
}

export function vmCheck(f: CheckFacts): CheckResult {
  const v = f.vm;
  const figures = { name: v.name, state: v.state, role: v.role, engine: v.engine, compatibility: v.compatibility ?? null, memoryMiB: v.memoryMiB, disks: v.disks.length };
  if (v.role === "primary") return fail("vm", `${v.name} is already protected by ${v.peer ?? "a secondary"}`, `nothing to check; to protect it elsewhere, colo failover ${v.name} first`, figures);
  if (v.role === "secondary") return fail("vm", `${v.name} is the secondary of a replication session on this host`, "run colo check on its primary", figures);
  const what = `${v.name}: ${v.state}, unprotected; ${v.engine} (${v.compatibility ?? "compatibility unknown"}), ${v.memoryMiB} MiB, ${v.disks.length} disk(s)`;
  if (v.state === "paused") return warn("vm", `${what}: its dirty rate says nothing of the running guest`, `colo unpause ${v.name} and check again`, figures);
  if (v.state !== "running") return fail("vm", what, "only a running VM can be protected", figures);
  return ok("vm", what, figures);
}

/** The receiver's facts, once the probe answered. */
function factsOf(f: CheckFacts): HostFacts | undefined {
  return f.peer.ok ? f.peer.probe.facts : undefined;
}

/** The receiver's host, as the lines name it. */
function hostOf(f: CheckFacts): string {
  const facts = factsOf(f);
  return facts ? `${f.to} (${facts.host}${facts.netns ? `, netns ${facts.netns}` : ""})` : f.to;
}

export function configCheck(f: CheckFacts): CheckResult {
  const c = f.secondary.config;
  const figures = { path: f.secondary.source.path, given: f.secondary.given, name: c.name, engine: c.engine, memoryMiB: c.memoryMiB, disks: c.disks.length };
  const which = f.secondary.given ? `${f.secondary.source.path} (-C)` : `${f.secondary.source.path} (the VM's own)`;
  if (c.name !== f.vm.name) return fail("config", `${which} names VM ${c.name}, the VM is ${f.vm.name}`, `set name = "${f.vm.name}" in it: a secondary has its primary's name`, figures);
  const facts = factsOf(f);
  if (facts && !facts.config.ok) return fail("config", `${hostOf(f)} cannot use ${which}: ${facts.config.error}`, "it parses here: the hosts run different colo versions? Update the secondary", figures);
  return ok("config", `${which}: VM ${c.name}, ${c.engine}, ${c.memoryMiB} MiB, ${c.disks.length} disk(s)${facts ? "; parses on both hosts" : ""}`, figures);
}

export function peerCheck(f: CheckFacts): CheckResult {
  if (!f.peer.ok) {
    const { code, message } = f.peer;
    const figures = { to: f.to, code };
    switch (code) {
      case "REFUSED":
        return fail("peer", `${f.to} refused the connection: nothing listens there`, 'start "colo migrate-receive --colo --listen ADDR" on the secondary', figures);
      case "AUTH":
        return fail("peer", `authentication with ${f.to} failed: the peer has another key`, "give both hosts the same key (colo keygen on one, copy the file to the other, mode 600)", figures);
      case "TIMEOUT":
        return fail("peer", `no answer from ${f.to}: ${message}`, "check the address, the route and any firewall between the hosts", figures);
      case "PROBE":
        if (/not a colo stream|toolstack header/.test(message)) return fail("peer", `${f.to} does not answer check probes (an older colo): ${message}`, "update colo on the secondary", figures);
        return fail("peer", `the probe of ${f.to} failed: ${message}`, "see the receiver's log (incoming-PORT.log in its run directory)", figures);
      default:
        return fail("peer", message, "check that colo migrate-receive runs there and the link is up", figures);
    }
  }
  const p = f.peer.probe;
  const rtt = p.rtt;
  const figures = { to: f.to, connectMs: p.connectMs, rttMedianMs: rtt.medianMs, rttMinMs: rtt.minMs, rttMaxMs: rtt.maxMs, rttSamples: rtt.samples };
  const line = `${hostOf(f)}: authenticated (TLS-PSK, ${p.connectMs.toFixed(1)} ms to connect); RTT median ${rtt.medianMs.toFixed(3)} ms (min ${rtt.minMs.toFixed(3)}, max ${rtt.maxMs.toFixed(3)}, ${rtt.samples} round trips)`;
  if (rtt.medianMs > RTT_WARN_MS) return warn("peer", line, `above ${RTT_WARN_MS} ms: every checkpoint and every compared packet waits for this link; keep both hosts on one LAN`, figures);
  return ok("peer", line, figures);
}

export function receiverCheck(f: CheckFacts, facts: HostFacts): CheckResult {
  const r = facts.receiver;
  const figures = { colo: r.colo, arbiter: r.arbiter ?? null, leaseMs: r.leaseMs ?? null, nameInUsePid: facts.nameInUse?.pid ?? null };
  if (!r.colo) return fail("receiver", `${hostOf(f)} waits for a live migration, not a replication session`, "restart it there as colo migrate-receive --colo", figures);
  if (facts.nameInUse) return fail("receiver", `a VM named ${f.vm.name} already runs on ${hostOf(f)} (daemon pid ${facts.nameInUse.pid}): the secondary could not take the name`, `colo destroy ${f.vm.name} there, if it is not needed`, figures);
  return ok("receiver", `${hostOf(f)} waits for a replication session (--colo${r.arbiter ? ` --arbiter ${r.arbiter}` : ""}); no VM named ${f.vm.name} there`, figures);
}

export function engineCheck(f: CheckFacts, facts: HostFacts): CheckResult {
  const p = facts.engine;
  const mine = f.vm.compatibility;
  const figures = { primary: mine ?? null, secondary: p && "descriptor" in p ? p.descriptor : null, secondaryEngine: p?.engineId ?? null };
  if (!p) return fail("engine", `${hostOf(f)} said nothing of its engine`, "update colo on the secondary", figures);
  if ("why" in p) return fail("engine", `${hostOf(f)} cannot start engine ${p.engineId}: ${p.why}`, p.engineId === "qemu" ? "install Debian's qemu-system-x86 there, the version this host runs" : "see the receiver's log", figures);
  if (mine === undefined) return fail("engine", `the ${f.vm.engine} engine of ${f.vm.name} does not know its compatibility`, "is the VM started? See colo status", figures);
  const mismatch = engineCompatMismatch({ engineId: f.vm.engine, descriptor: mine }, p);
  if (mismatch) return fail("engine", `the secondary would refuse the stream: ${mismatch}`, `run the same engine on both hosts (${p.engineId === "qemu" ? "the same qemu-system-x86 package" : "the same colo and v86"})`, figures);
  return ok("engine", `${mine} on both hosts (the secondary's from ${p.from})`, figures);
}

export function memoryCheck(f: CheckFacts): CheckResult {
  const mine = f.vm.memoryMiB;
  const theirs = f.secondary.config.memoryMiB;
  const figures = { primaryMiB: mine, secondaryMiB: theirs };
  // The migration's own comparison, of the memory alone (the engine is the engine check's).
  const mismatch = machineMismatch({ engineId: f.vm.engine, memoryBytes: mine * 2 ** 20 }, { engineId: f.vm.engine, memoryBytes: theirs * 2 ** 20 });
  if (mismatch) return fail("memory", `the secondary would refuse the stream: ${mismatch}`, `set memory = ${mine} in ${f.secondary.source.path}`, figures);
  return ok("memory", `${mine} MiB on both`, figures);
}

/** One machine, one file: both hosts are the same boot of one machine and the inode is the same. */
function sameFile(f: CheckFacts, facts: HostFacts, mine: { dev?: string; ino?: string }, theirs: FileFact): boolean {
  return facts.bootId !== undefined && facts.bootId === f.vm.bootId && mine.dev !== undefined && mine.dev === theirs.dev && mine.ino === theirs.ino;
}

export function disksCheck(f: CheckFacts, facts: HostFacts): CheckResult {
  const host = hostOf(f);
  const cfg = f.secondary.source.path;
  const theirs = f.secondary.config.disks;
  const figures: Record<string, unknown> = { primary: f.vm.disks.map((d) => ({ index: d.index, access: d.access, bytes: d.bytes })), secondary: [] as unknown[] };
  if (theirs.length !== f.vm.disks.length) return fail("disks", `${f.vm.name} has ${f.vm.disks.length} disk(s), ${cfg} ${theirs.length}: the secondary's machine would differ`, `give ${cfg} one disk per disk of the VM, in the same slots`, figures);
  const parts: string[] = [];
  for (const d of f.vm.disks) {
    const cd = theirs[d.index];
    const fact = facts.files.find((x) => x.role === "disk" && x.index === d.index);
    const label = `disk ${d.index} (${d.vdev}, ${d.access}${d.access === "rw" ? ", replicated" : ""})`;
    (figures.secondary as unknown[]).push(fact ? { index: d.index, path: fact.path, exists: fact.exists, bytes: fact.bytes ?? null } : { index: d.index });
    if (!cd || !fact) return fail("disks", `${label}: ${host} said nothing of it`, "update colo on the secondary", figures);
    if (d.access === "rw" && cd.access !== "rw") return fail("disks", `the primary replicates disk ${d.index}, which ${cfg} does not have as a writable disk`, `make disk ${d.index} of ${cfg} writable`, figures);
    if (!fact.exists) {
      const fix = d.access === "rw" ? `put an image of ${d.bytes} bytes there (a copy of the primary's, or colo disk-create ${fact.path} --size ${Math.ceil(d.bytes / 2 ** 20)}: replication copies what differs)` : `copy the primary's ${d.path} there`;
      return fail("disks", `${label}: ${fact.path} is not on ${host} (${fact.error ?? "missing"})`, fix, figures);
    }
    if (fact.usable === false) return fail("disks", `${label}: ${host} cannot use ${fact.path}: ${fact.error ?? "cannot open it"}`, "fix its permissions or size there", figures);
    if (fact.bytes !== d.bytes) return fail("disks", `disk ${d.index}: the primary's image is ${d.bytes} bytes, the secondary's ${fact.path} ${fact.bytes ?? "?"}`, `make it ${d.bytes} bytes (truncate -s ${d.bytes} ${fact.path}, or a copy of the primary's)`, figures);
    if (d.access === "rw" && sameFile(f, facts, d, fact)) return fail("disks", `${label}: the secondary's ${fact.path} is the primary's own image (one file on one machine)`, `give the secondary its own copy in ${cfg}`, figures);
    parts.push(`${label}: ${size(d.bytes)} on both (${fact.path})`);
  }
  return ok("disks", parts.length > 0 ? parts.join("; ") : "no disks", figures);
}

export function filesCheck(f: CheckFacts, facts: HostFacts): CheckResult {
  const host = hostOf(f);
  const figures: Record<string, unknown> = {};
  const parts: string[] = [];
  let differs: string | undefined;
  for (const [role, mine] of [["kernel", f.vm.kernel], ["ramdisk", f.vm.ramdisk]] as const) {
    const fact = facts.files.find((x) => x.role === role);
    if (!fact) continue;
    figures[role] = { path: fact.path, exists: fact.exists, bytes: fact.bytes ?? null, primaryBytes: mine?.bytes ?? null };
    if (!fact.exists) return fail("files", `${role} ${fact.path} is not on ${host} (${fact.error ?? "missing"})`, `copy it there: the secondary reads it to build its VM`, figures);
    parts.push(`${role} ${fact.path} (${size(fact.bytes ?? 0)})`);
    if (mine?.bytes !== undefined && fact.bytes !== mine.bytes) differs ??= `${role} ${fact.path} on ${host} is ${fact.bytes ?? "?"} bytes, the primary's ${mine.path} ${mine.bytes}`;
  }
  if (differs) return warn("files", `${differs}: a reboot after a failover would boot another ${differs.split(" ")[0]}`, "copy the primary's files there", figures);
  return ok("files", `${parts.join(", ")} on ${host}${f.vm.kernel.bytes !== undefined ? ", the sizes of the primary's" : ""}`, figures);
}
