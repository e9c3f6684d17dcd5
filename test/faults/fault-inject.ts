/**
 * The faults the suite injects (test/faults/fault-suite.ts), one function
 * each, on a pair replicating in the lab. Every fault ends by itself: links
 * come back up, loss rules go, stalled processes continue.
 */
import { DEFAULT_PEER_TIMEOUT_MS } from "../../src/colo/heartbeat.js";
import type { LabTopology } from "../../src/lab/topology.js";
import { run, runIn } from "../tools/run.js";
import type { VmStatusJson } from "../tools/pair-fixture.js";

export const FAULT_KINDS = [
  "kill-primary",
  "kill-secondary",
  "kill-primary-mid-checkpoint",
  "kill-secondary-initial-sync",
  "link-down",
  "link-flap",
  "packet-loss",
  "stall-primary",
  "stall-secondary",
  "kill-primary-engine",
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/**
 * The kinds that apply on an engine: kill-primary-engine SIGKILLs the
 * primary's engine process (QEMU), which only the qemu engine has (emu runs
 * the guest inside the daemon: kill-primary is that case).
 */
export function faultKindsFor(engine: string): FaultKind[] {
  return FAULT_KINDS.filter((k) => k !== "kill-primary-engine" || engine === "qemu");
}

/** How long a stall-* fault stops a host's processes: twice the peer timeout (issue 13). */
export const STALL_MS = 2 * DEFAULT_PEER_TIMEOUT_MS;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * A host frozen for `ms`: SIGSTOP of its daemon and its engine process
 * (QEMU, when there is one), then SIGCONT. What a host that stops being
 * scheduled (an overloaded or migrating hypervisor host, a long GC or swap
 * storm) looks like to its peer: silence, then the same process going on
 * as if nothing happened -- with every timer overdue.
 */
export async function stall(s: VmStatusJson, ms: number): Promise<void> {
  const pids = [s.pid, ...(s.enginePid !== undefined ? [s.enginePid] : [])];
  for (const p of pids) process.kill(p, "SIGSTOP");
  try {
    await sleep(ms);
  } finally {
    for (const p of pids) {
      try {
        process.kill(p, "SIGCONT");
      } catch {
        // gone meanwhile
      }
    }
  }
}

async function ip(ns: string, args: string[]): Promise<void> {
  const r = await run("ip", ["-n", ns, ...args], { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`ip -n ${ns} ${args.join(" ")}: ${r.stderr}`);
}

/** `nft ARGS` inside namespace `ns`; its stdout, or an error naming the command, the namespace and nft's message. */
export async function nft(ns: string, args: string[]): Promise<string> {
  const r = await runIn(ns, "nft", args, { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`nft ${args.join(" ")} in ${ns}: ${r.stderr.trim()}`);
  return r.stdout;
}

const LOSS_TABLE = "colofault";

export async function linkDown(lab: LabTopology, host: string): Promise<void> {
  await ip(host, ["link", "set", lab.replIf, "down"]);
}

/** Down/up below and above the peer timeout. */
export async function linkFlap(lab: LabTopology, host: string): Promise<void> {
  for (const ms of [300, 300, 1500]) {
    await ip(host, ["link", "set", lab.replIf, "down"]);
    await sleep(ms);
    await ip(host, ["link", "set", lab.replIf, "up"]);
    await sleep(500);
  }
}

/** 20% of the replication link's packets dropped each way for 5 s (nftables on `host`). */
export async function packetLoss(lab: LabTopology, host: string): Promise<void> {
  await nft(host, ["add", "table", "inet", LOSS_TABLE]);
  await nft(host, ["add", "chain", "inet", LOSS_TABLE, "out", "{ type filter hook output priority 0; }"]);
  await nft(host, ["add", "chain", "inet", LOSS_TABLE, "in", "{ type filter hook input priority 0; }"]);
  await nft(host, ["add", "rule", "inet", LOSS_TABLE, "out", "oifname", lab.replIf, "numgen", "random", "mod", "100", "<", "20", "drop"]);
  await nft(host, ["add", "rule", "inet", LOSS_TABLE, "in", "iifname", lab.replIf, "numgen", "random", "mod", "100", "<", "20", "drop"]);
  await sleep(5000);
  await nft(host, ["delete", "table", "inet", LOSS_TABLE]);
}

/** Undoes link faults on every host (best effort: the lab may be half gone). */
export async function restoreLinks(lab: LabTopology): Promise<void> {
  for (const h of lab.hosts) {
    await ip(h, ["link", "set", lab.replIf, "up"]).catch(() => undefined);
    await runIn(h, "nft", ["delete", "table", "inet", LOSS_TABLE], { timeoutMs: 10_000 }).catch(() => undefined);
  }
}
