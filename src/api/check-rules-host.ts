/**
 * `colo check`'s verdicts on the secondary host's resources, the link and
 * the arbiter (docs/operations.md "colo check"): pure functions of the
 * facts (CheckFacts, check-rules.ts), and `evaluateChecks`, every verdict in
 * the order they are printed.
 */
import { DEFAULT_BACKLOG_LIMIT_BYTES } from "../colo/disk/secondary-disk.js";
import type { HostFacts } from "./check-protocol.js";
import { fail, mbit, ok, size, warn, type CheckName, type CheckResult, CHECK_NAMES } from "./check-result.js";
import { configCheck, disksCheck, engineCheck, filesCheck, keyCheck, memoryCheck, peerCheck, receiverCheck, vmCheck, type CheckFacts } from "./check-rules.js";

const MIB = 2 ** 20;

/**
 * What a secondary's daemon holds besides one copy of guest RAM, by engine
 * (estimates, docs/operations.md): emu keeps v86's RAM and the dirty
 * tracker's shadow (2 copies) and ~160 MiB of Node and v86; qemu two RAM
 * files (the running QEMU's and the standby's) and the shadow (3 copies)
 * and ~320 MiB of Node and two QEMU processes. A checkpoint's pages held
 * until it ends come on top (at most the pages of one checkpoint).
 */
export const ENGINE_MEMORY: Readonly<Record<string, { ramCopies: number; fixedBytes: number }>> = {
  emu: { ramCopies: 2, fixedBytes: 160 * MIB },
  qemu: { ramCopies: 3, fixedBytes: 320 * MIB },
};

/** The link must carry the dirty rate; below this many times it, a warning. */
export const BANDWIDTH_HEADROOM = 2;

/** The memory a secondary of `engine` with `memoryMiB` of RAM needs on its host (estimate). */
export function secondaryMemoryNeed(engine: string, memoryMiB: number): number {
  const e = ENGINE_MEMORY[engine] ?? { ramCopies: 3, fixedBytes: 320 * MIB };
  return e.ramCopies * memoryMiB * MIB + e.fixedBytes;
}

function hostName(facts: HostFacts): string {
  return `${facts.host}${facts.netns ? ` (netns ${facts.netns})` : ""}`;
}

export function hostMemoryCheck(f: CheckFacts, facts: HostFacts): CheckResult {
  const engine = f.secondary.config.engine;
  const need = secondaryMemoryNeed(engine, f.secondary.config.memoryMiB);
  const m = facts.memory;
  if ("error" in m) return warn("host-memory", `${hostName(facts)}: ${m.error}`, "check its free memory by hand", { needBytes: need });
  const e = ENGINE_MEMORY[engine];
  const figures = { availableBytes: m.availableBytes, totalBytes: m.totalBytes, needBytes: need };
  const how = `${f.secondary.config.memoryMiB} MiB x ${e?.ramCopies ?? 3} + ${size(e?.fixedBytes ?? 320 * MIB)} for ${engine}`;
  const line = `${hostName(facts)} has ${size(m.availableBytes)} available of ${size(m.totalBytes)}; the secondary needs about ${size(need)} (${how})`;
  if (m.availableBytes < need) return fail("host-memory", line, "free memory there, or give the VM less memory", figures);
  return ok("host-memory", line, figures);
}

export function shmCheck(f: CheckFacts, facts: HostFacts): CheckResult | undefined {
  if (!facts.shm) return undefined;
  const need = 2 * f.secondary.config.memoryMiB * MIB;
  if ("error" in facts.shm) return warn("shm", `${hostName(facts)}: ${facts.shm.error}`, "the qemu engine keeps its RAM files in /dev/shm: check it by hand", { needBytes: need });
  const figures = { freeBytes: facts.shm.freeBytes, needBytes: need };
  const line = `/dev/shm on ${hostName(facts)} has ${size(facts.shm.freeBytes)} free; the qemu engine keeps 2 RAM files of ${f.secondary.config.memoryMiB} MiB there`;
  if (facts.shm.freeBytes < need) return fail("shm", line, `mount -o remount,size=${Math.ceil((need * 1.25) / MIB)}M /dev/shm there (or more)`, figures);
  return ok("shm", line, figures);
}

export function spillCheck(facts: HostFacts): CheckResult {
  if (facts.spill.length === 0) return ok("spill-space", "no replicated disk: nothing spills", { disks: 0 });
  const figures = { perDiskBytes: DEFAULT_BACKLOG_LIMIT_BYTES, disks: facts.spill.map((s) => ({ disk: s.disk, dir: s.dir, freeBytes: s.freeBytes ?? null, tmpfs: s.tmpfs ?? null })) };
  const broken = facts.spill.find((s) => s.error !== undefined || s.freeBytes === undefined);
  if (broken) return warn("spill-space", `disk ${broken.disk}: cannot tell the free space of ${broken.checked} on ${hostName(facts)} (${broken.error ?? "?"})`, "check it by hand", figures);
  // Disks on one filesystem share its space.
  const byFs = new Map<string, { dirs: string[]; free: number; disks: number; tmpfs: boolean }>();
  for (const s of facts.spill) {
    const k = s.dev ?? s.checked;
    const g = byFs.get(k) ?? { dirs: [], free: s.freeBytes ?? 0, disks: 0, tmpfs: s.tmpfs === true };
    g.dirs.push(s.dir);
    g.disks++;
    byFs.set(k, g);
  }
  const parts: string[] = [];
  let tmpfs: string | undefined;
  for (const g of byFs.values()) {
    const need = g.disks * DEFAULT_BACKLOG_LIMIT_BYTES;
    const line = `${g.dirs.join(", ")}: ${size(g.free)} free for ${g.disks} disk(s) spilling up to ${size(need)}`;
    if (g.free < need) return fail("spill-space", `${line} on ${hostName(facts)}`, "free space there, or give the disks an active-disk= on a larger filesystem", figures);
    if (g.tmpfs) tmpfs ??= g.dirs.join(", ");
    parts.push(line);
  }
  const detail = `${parts.join("; ")} (each disk's overlays spill past 64 MiB; at ${size(DEFAULT_BACKLOG_LIMIT_BYTES)} the secondary asks for a checkpoint)`;
  if (tmpfs) return warn("spill-space", `${detail}; ${tmpfs} is on tmpfs`, "spilled bytes on tmpfs take RAM: give the disks an active-disk= on a real disk, or COLO_RUN_DIR there", figures);
  return ok("spill-space", detail, figures);
}

export function bridgeCheck(f: CheckFacts, facts: HostFacts): CheckResult | undefined {
  if (facts.bridges.length === 0) return undefined;
  const figures = { bridges: facts.bridges };
  const missing = facts.bridges.filter((b) => !b.present).map((b) => b.name);
  if (missing.length > 0) return warn("bridge", `bridge ${missing.join(", ")} is not on ${hostName(facts)}: after a failover the secondary's TAP cannot join the LAN`, `create it there (ip link add NAME type bridge) or fix bridge= in ${f.secondary.source.path}`, figures);
  return ok("bridge", `bridge ${facts.bridges.map((b) => b.name).join(", ")} on ${hostName(facts)} (the secondary's TAP joins it at failover)`, figures);
}

export function bandwidthCheck(f: CheckFacts): CheckResult | undefined {
  if (!f.peer.ok) return undefined;
  const b = f.peer.probe.bandwidth;
  const d = f.vm.dirty;
  const need = d.bytesPerSec;
  const ratio = need > 0 ? b.bytesPerSec / need : Number.POSITIVE_INFINITY;
  const figures = {
    linkBytesPerSec: b.bytesPerSec,
    sentBytes: b.bytes,
    sentMs: b.ms,
    timeLimited: b.timeLimited,
    dirtyPagesPerSec: d.pagesPerSec,
    dirtyBytesPerSec: need,
    dirtyWindowMs: d.windowMs,
    dirtyExact: d.exact,
    headroom: Number.isFinite(ratio) ? Math.round(ratio * 10) / 10 : null,
  };
  const link = `${mbit(b.bytesPerSec)} (${size(b.bytes)} in ${b.ms.toFixed(0)} ms, timed by the receiver)`;
  const rate = need > 0 ? `the guest's dirty rate ${d.pagesPerSec} pages/s (${mbit(need)}; ${d.dirtyPages} pages in ${d.windowMs} ms${d.exact ? "" : `, from ${d.sampledPages} of ${d.pages} pages`})` : `a guest that dirtied no page in ${d.windowMs} ms`;
  if (b.bytesPerSec < need) return fail("bandwidth", `${link} cannot carry ${rate}`, "checkpoints would grow until the secondary is lost: a faster link, or a guest that writes less", figures);
  const line = `${link} vs ${rate}${Number.isFinite(ratio) ? `: ${ratio.toFixed(1)}x headroom` : ""}`;
  if (ratio < BANDWIDTH_HEADROOM) return warn("bandwidth", line, `less than ${BANDWIDTH_HEADROOM}x: a burst of writes makes long checkpoints; a faster link is advised`, figures);
  return ok("bandwidth", line, figures);
}

export function arbiterCheck(f: CheckFacts, facts: HostFacts | undefined): CheckResult | undefined {
  const a = f.arbiter;
  const theirs = facts?.receiver.arbiter;
  const figures = { primary: a?.at ?? null, secondary: theirs ?? null, primaryLeaseMs: a?.leaseMs ?? null, secondaryLeaseMs: facts?.receiver.leaseMs ?? null };
  if (!a) {
    if (!facts) return undefined;
    if (theirs) return fail("arbiter", `the secondary was started with --arbiter ${theirs}, this check without`, `give colo check and colo migrate --colo --arbiter ${theirs} (both sides or neither)`, figures);
    return ok("arbiter", "no arbiter on either side (a cut link between the two may then end with two running copies: docs/replication.md)", figures);
  }
  if (!a.reach.ok) return fail("arbiter", `${a.at} does not answer from this host: ${a.reach.error}`, `start colo arbiter --listen ${a.at} there, or check the route to it`, figures);
  const r = a.reach;
  const lease = r.leases?.find((l) => l.vm === f.vm.name);
  const held = lease && lease.holder !== f.vm.leaseHolder && (lease.solo || lease.remainingMs > 0) ? lease : undefined;
  const reach = `${a.at} answers in ${r.rttMs.toFixed(1)} ms (${r.leases ? `${r.leases.length} lease(s)` : "a throwaway lease taken and released"})`;
  if (held) return fail("arbiter", `${reach}, and holds ${f.vm.name}'s lease for ${held.holder}${held.solo ? " (solo: it ran alone)" : ` for ${held.remainingMs} ms more`}: the primary's would be refused`, "end that VM's session first (its daemon releases the lease as it goes)", figures);
  if (!facts) return ok("arbiter", reach, figures);
  if (!theirs) return fail("arbiter", `${reach}; the secondary was started without --arbiter`, `restart it with colo migrate-receive --colo --arbiter ${a.at} (both sides or neither)`, figures);
  if (theirs !== a.at) return warn("arbiter", `${reach}; the secondary uses ${theirs}`, "both sides must reach the same arbiter: fine if that is its address from there", figures);
  if (facts.receiver.leaseMs !== undefined && facts.receiver.leaseMs !== a.leaseMs) return warn("arbiter", `${reach}; the secondary's lease is ${facts.receiver.leaseMs} ms, this one ${a.leaseMs} ms`, "give both sides the same --lease", figures);
  return ok("arbiter", `${reach}; the secondary uses it too (lease ${a.leaseMs} ms)`, figures);
}

/** Every verdict, in CHECK_NAMES order; after a failed probe only those that need no receiver, and the names not run. */
export function evaluateChecks(f: CheckFacts): { results: CheckResult[]; skipped: CheckName[] } {
  const facts = f.peer.ok ? f.peer.probe.facts : undefined;
  // The memory check needs only this host's parse of the config; the others, the receiver's facts.
  const out: (CheckResult | undefined)[] = [keyCheck(f), vmCheck(f), configCheck(f), peerCheck(f), memoryCheck(f)];
  if (facts) {
    out.push(receiverCheck(f, facts));
    if (facts.config.ok) {
      out.push(engineCheck(f, facts), disksCheck(f, facts), filesCheck(f, facts), hostMemoryCheck(f, facts), shmCheck(f, facts), spillCheck(facts), bridgeCheck(f, facts));
    }
    out.push(bandwidthCheck(f));
  }
  out.push(arbiterCheck(f, facts));
  const results = out.filter((r): r is CheckResult => r !== undefined).sort((a, b) => CHECK_NAMES.indexOf(a.name) - CHECK_NAMES.indexOf(b.name));
  const optional: CheckName[] = ["shm", "bridge", "arbiter"];
  const skipped = CHECK_NAMES.filter((n) => !optional.includes(n) && !results.some((r) => r.name === n));
  return { results, skipped };
}
