import { resolve } from "node:path";
import type { Command } from "commander";
import { request } from "../api/control-client.js";
import { DEFAULT_MIGRATION_PORT } from "../api/migration.js";
import { vmRunFiles } from "../api/paths.js";
import { findVm } from "../api/registry.js";
import { loadKey } from "../channel/key.js";
import { formatEndpoint, parseEndpoint } from "../channel/secure-channel.js";
import { fail } from "./output.js";
import { formatArbiterAddress, parseArbiterAddress } from "../api/arbiter-address.js";
import { DEFAULT_LEASE_TTL_MS } from "../colo/lease.js";
import type { ReprotectTarget } from "../api/protocol.js";

/** The arbiter's address as the daemon wants it (checked here: a bad address is this command's error). */
function arbiterFields(o: { arbiter?: string; lease?: number }): { arbiter?: string; leaseMs?: number } {
  if (!o.arbiter) return {};
  return { arbiter: formatArbiterAddress(parseArbiterAddress(o.arbiter)), leaseMs: o.lease ?? DEFAULT_LEASE_TTL_MS };
}

/** The two re-protection options, one text for every command that takes them. */
export function withReprotectOptions(cmd: Command, side: "primary" | "secondary"): Command {
  const when = side === "primary" ? "after losing its secondary" : "after a takeover";
  return cmd
    .option("--reprotect <host[:port]>", `${when}, ask this host (running colo migrate-receive --colo) for a new secondary, retrying until one starts (docs/operations.md "Automatic re-protection")`)
    .option("--reprotect-config <cfg>", `with --reprotect: the config the new secondary runs (default: ${side === "primary" ? "the one the lost secondary ran" : "this VM's own"})`);
}

/** `--reprotect HOST[:PORT]` and `--reprotect-config CFG` as the daemon wants them (daemon-reprotect.ts). */
export function reprotectFields(o: { reprotect?: string; reprotectConfig?: string }): { reprotect?: ReprotectTarget } {
  if (o.reprotectConfig !== undefined && o.reprotect === undefined) fail("--reprotect-config needs --reprotect HOST[:PORT]");
  if (o.reprotect === undefined) return {};
  const to = parseEndpoint(o.reprotect, DEFAULT_MIGRATION_PORT);
  return { reprotect: { host: to.host, port: to.port, ...(o.reprotectConfig ? { configPath: resolve(o.reprotectConfig) } : {}) } };
}

interface StartAnswer {
  checkpoint0Pages: number;
  disks: number;
  start?: { totalMs: number; pauseMs: number; pages: number; bytes: number; disk: { chunksCopied: number; bytesCopied: number; ms: number; byLog?: number } };
}

const mib = (b: number) => (b / 2 ** 20).toFixed(1);

/** The start's figures, one line: what re-protection costs (docs/operations.md "Re-protection"). */
function printStart(name: string, r: StartAnswer): void {
  const s = r.start;
  if (!s) return;
  process.stdout.write(
    `${name}: start ${s.totalMs} ms; checkpoint 0 paused the guest ${s.pauseMs} ms (${s.pages} pages, ${mib(s.bytes)} MiB); ` +
      `disks: ${s.disk.chunksCopied} chunks (${mib(s.disk.bytesCopied)} MiB) copied, the ones that differed, in ${s.disk.ms} ms` +
      `${s.disk.byLog ? ` (${s.disk.byLog} disk(s) by activity logs, without hashing)` : ""}\n`,
  );
}

/** `colo remus NAME HOST[:PORT]`: starts Remus-mode replication; returns once the secondary holds checkpoint 0. */
export async function remusVm(
  name: string,
  dest: string,
  o: { interval: number; peerTimeout: number; heartbeat: number; keyFile: string; arbiter?: string; lease?: number; reprotect?: string; reprotectConfig?: string; fullDiskSync?: boolean },
): Promise<void> {
  const again = reprotectFields(o); // a bad --reprotect is this command's error, whatever else
  if (!findVm(name)) fail(`no VM named ${name} is running (see colo list)`);
  const to = parseEndpoint(dest, DEFAULT_MIGRATION_PORT);
  const keyFile = resolve(o.keyFile);
  loadKey(keyFile);
  const r = (await request(
    vmRunFiles(name).socket,
    { op: "remus", host: to.host, port: to.port, keyFile, intervalMs: o.interval, timeoutMs: o.peerTimeout, heartbeatMs: o.heartbeat, ...arbiterFields(o), ...again, ...(o.fullDiskSync ? { fullDiskSync: true } : {}) },
    600_000,
  )) as StartAnswer;
  process.stdout.write(
    `${name}: protected by ${formatEndpoint(to)} (Remus mode, checkpoint every ${o.interval} ms; checkpoint 0: ${r.checkpoint0Pages} pages); see colo status ${name}\n`,
  );
  printStart(name, r);
  printReprotect(name, again);
}

/** What --reprotect will do, one line. */
function printReprotect(name: string, again: { reprotect?: ReprotectTarget }): void {
  if (again.reprotect) process.stdout.write(`${name}: if it loses its secondary, it asks ${formatEndpoint(again.reprotect)} for a new one (--reprotect)\n`);
}

/** `colo migrate --colo NAME HOST[:PORT]`: starts COLO compare mode; returns once the secondary runs from checkpoint 0. */
export async function coloVm(
  name: string,
  dest: string,
  o: {
    keyFile: string;
    config?: string;
    peerTimeout: number;
    heartbeat: number;
    compareTimeout: number;
    minGap: number;
    maxInterval: number;
    arbiter?: string;
    lease?: number;
    reprotect?: string;
    reprotectConfig?: string;
    fullDiskSync?: boolean;
  },
): Promise<void> {
  const again = reprotectFields(o); // a bad --reprotect is this command's error, whatever else
  if (!findVm(name)) fail(`no VM named ${name} is running (see colo list)`);
  const to = parseEndpoint(dest, DEFAULT_MIGRATION_PORT);
  const keyFile = resolve(o.keyFile);
  loadKey(keyFile);
  const r = (await request(
    vmRunFiles(name).socket,
    {
      op: "remus",
      mode: "compare",
      host: to.host,
      port: to.port,
      keyFile,
      intervalMs: Math.min(o.maxInterval, 3_600_000), // unused in compare mode; the field is shared with Remus
      timeoutMs: o.peerTimeout,
      heartbeatMs: o.heartbeat,
      compareTimeoutMs: o.compareTimeout,
      minGapMs: o.minGap,
      maxIntervalMs: o.maxInterval,
      ...(o.config ? { configPath: resolve(o.config) } : {}),
      ...arbiterFields(o),
      ...again,
      ...(o.fullDiskSync ? { fullDiskSync: true } : {}),
    },
    600_000,
  )) as StartAnswer;
  process.stdout.write(
    `${name}: protected by ${formatEndpoint(to)} (COLO compare mode; compare timeout ${o.compareTimeout} ms, checkpoint at least every ${o.maxInterval} ms; ` +
      `checkpoint 0: ${r.checkpoint0Pages} pages, ${r.disks} replicated disk(s)); see colo status ${name}\n`,
  );
  printStart(name, r);
  printReprotect(name, again);
}

/** `colo checkpoint NAME [--verify-disks]`: an operator checkpoint on a primary; prints its figures as JSON. */
export async function checkpointVm(name: string, o: { verifyDisks?: boolean }): Promise<void> {
  if (!findVm(name)) fail(`no VM named ${name} is running (see colo list)`);
  const r = await request(vmRunFiles(name).socket, { op: "checkpoint", ...(o.verifyDisks ? { verifyDisks: true } : {}) }, 120_000);
  process.stdout.write(JSON.stringify(r, null, 2) + "\n");
}

/** `colo disk-hashes NAME`: SHA-256 of each disk image as this host holds it, as JSON. */
export async function diskHashesVm(name: string): Promise<void> {
  if (!findVm(name)) fail(`no VM named ${name} is running (see colo list)`);
  const r = await request(vmRunFiles(name).socket, { op: "disk-hashes" }, 120_000);
  process.stdout.write(JSON.stringify(r, null, 2) + "\n");
}

/** `colo failover NAME`. */
export async function failoverVm(name: string): Promise<void> {
  if (!findVm(name)) fail(`no VM named ${name} is running (see colo list)`);
  const r = (await request(vmRunFiles(name).socket, { op: "failover" })) as { role: string; action: string };
  process.stdout.write(`${name} (${r.role}): ${r.action}\n`);
}
