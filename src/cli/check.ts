/**
 * `colo check NAME HOST[:PORT] [-C CFG] [--key-file F] [--arbiter A] [--json]`:
 * before protecting a running VM, everything that would fail later, one
 * line per check (docs/operations.md "colo check"). Bad input (the key
 * file, the config, an unknown VM, an address) is a one-line error before
 * anything is asked of either host; the checks themselves: src/api/check.ts.
 */
import { readFileSync, statSync } from "node:fs";
import { resolve } from "node:path";
import type { Command } from "commander";
import { DEFAULT_ARBITER_PORT } from "../api/arbiter.js";
import { parseArbiterAddress } from "../api/arbiter-address.js";
import { runCheck, type CheckReport } from "../api/check.js";
import { formatResult } from "../api/check-result.js";
import { DEFAULT_DIRTY_SAMPLE_MS, type VmFacts } from "../api/daemon-check.js";
import { request } from "../api/control-client.js";
import type { ConfigSource } from "../api/image-io.js";
import { DEFAULT_MIGRATION_PORT } from "../api/migration.js";
import { vmRunFiles } from "../api/paths.js";
import { findVm } from "../api/registry.js";
import { DEFAULT_KEY_FILE, loadKey } from "../channel/key.js";
import { parseEndpoint } from "../channel/secure-channel.js";
import { DEFAULT_LEASE_TTL_MS } from "../colo/lease.js";
import { parseVmConfig } from "../config/index.js";
import { arbiterAddress, positiveInt } from "./arg-types.js";
import { CliError, fail } from "./output.js";

/** The dirty-rate sample's window, as the control request takes it (protocol.ts). */
const MIN_SAMPLE_MS = 100;
const MAX_SAMPLE_MS = 10_000;

export interface CheckOptions {
  keyFile: string;
  config?: string;
  arbiter?: string;
  lease?: number;
  json?: boolean;
  /** The dirty-rate sample's window, ms. */
  sample?: number;
}

function readConfigFile(path: string): ConfigSource {
  try {
    return { path, text: readFileSync(path, "utf8") };
  } catch (err) {
    fail(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

function isVmFacts(v: unknown): v is VmFacts {
  const f = v as Partial<VmFacts> | null;
  return typeof f === "object" && f !== null && typeof f.name === "string" && typeof f.engine === "string" && Array.isArray(f.disks) && typeof f.dirty === "object" && typeof f.config === "object";
}

function print(report: CheckReport, json: boolean): void {
  if (json) {
    process.stdout.write(JSON.stringify(report, null, 2) + "\n");
    return;
  }
  for (const r of report.results) process.stdout.write(formatResult(r) + "\n");
  if (report.skipped.length > 0) process.stdout.write(`skip ${report.skipped.join(", ")}: they need the receiver's answer\n`);
  const { ok, warn, fail: failed } = report.counts;
  process.stdout.write(`${report.vm} -> ${report.to}: ${ok} ok, ${warn} warning(s), ${failed} failed (${report.ms} ms)\n`);
}

/** `colo check`: exit 0 when nothing failed (warnings allowed). */
export async function checkVm(name: string, dest: string, o: CheckOptions): Promise<void> {
  const to = parseEndpoint(dest, DEFAULT_MIGRATION_PORT);
  const sampleMs = o.sample ?? DEFAULT_DIRTY_SAMPLE_MS;
  if (sampleMs < MIN_SAMPLE_MS || sampleMs > MAX_SAMPLE_MS) throw new CliError(`--sample ${sampleMs}: expected ${MIN_SAMPLE_MS}..${MAX_SAMPLE_MS} ms`, 2);
  const arbiter = o.arbiter ? { at: parseArbiterAddress(o.arbiter), leaseMs: o.lease ?? DEFAULT_LEASE_TTL_MS } : undefined;
  const keyPath = resolve(o.keyFile);
  const key = loadKey(keyPath);
  const keyFacts = { path: keyPath, bytes: key.length, mode: statSync(keyPath).mode, key };
  // -C is parsed here first: a config that does not parse is this command's error (file:line), before either host is asked.
  const given = o.config ? readConfigFile(resolve(o.config)) : undefined;
  const givenConfig = given ? parseVmConfig(given.text, given.path) : undefined;
  if (!findVm(name)) fail(`no VM named ${name} is running (see colo list)`);
  const vm = await request(vmRunFiles(name).socket, { op: "check", sampleMs }, sampleMs + 30_000);
  if (!isVmFacts(vm)) fail(`the daemon of ${name} gave no check facts (an older colo daemon? restart the VM with this colo)`);
  const source = given ?? vm.config;
  const secondary = { source, config: givenConfig ?? parseVmConfig(source.text, source.path), given: given !== undefined };
  const report = await runCheck({ key: keyFacts, vm, secondary, to, ...(arbiter ? { arbiter } : {}) });
  print(report, o.json === true);
  if (!report.ok) {
    const failed = report.results.filter((r) => r.status === "fail");
    const first = failed[0];
    const why = first ? `${failed.length} failed (${failed.map((r) => r.name).join(", ")}); ${first.name}: ${first.detail}` : `${report.skipped.length} check(s) could not run`;
    throw new CliError(`check of ${name} -> ${report.to}: ${why}`, 1);
  }
}

/** Registers `colo check` on the program (src/cli/main.ts). */
export function addCheckCommand(p: Command): void {
  p.command("check")
    .description("before protecting a running VM: check it, the link and a waiting secondary (colo migrate-receive --colo) for everything that would fail later; exit 0 if nothing fails")
    .argument("<name>")
    .argument("<host[:port]>", `the secondary, running colo migrate-receive --colo (default port ${DEFAULT_MIGRATION_PORT})`)
    .option("-C, --config <cfg>", "the secondary's config, as colo migrate --colo -C would send it (default: the VM's own)")
    .option("--key-file <file>", "shared key (colo keygen)", DEFAULT_KEY_FILE)
    .option("--arbiter <addr[:port]|etcd://host:port,...>", `the arbiter colo migrate --colo would use (colo arbiter, default port ${DEFAULT_ARBITER_PORT}; or an etcd cluster)`, arbiterAddress)
    .option("--lease <ms>", "with --arbiter: the lease colo migrate --colo would use", positiveInt, DEFAULT_LEASE_TTL_MS)
    .option("--sample <ms>", "how long the guest's dirty rate is sampled (100..10000)", positiveInt, DEFAULT_DIRTY_SAMPLE_MS)
    .option("--json", "the checks and their figures as JSON")
    .action(async (name: string, dest: string, o: CheckOptions) => checkVm(name, dest, o));
}
