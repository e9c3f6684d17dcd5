/**
 * `colo protect NAME HOST[:PORT]`: starts COLO compare mode (or, with
 * --remus, Remus mode) on a running, unprotected VM -- a VM never
 * protected, or the survivor of a failover, with the same options as
 * `colo migrate --colo` / `colo remus`. Disks: only the chunks that differ
 * from what the new secondary's image holds are copied: those the two
 * images' activity logs name when they prove it (no hashing), else those the
 * hash compare finds (always with --full-disk-sync); the start's figures
 * (checkpoint-0 pause, memory sent, chunks copied) are printed.
 * docs/operations.md "Re-protection".
 */
import type { Command } from "commander";
import { DEFAULT_ARBITER_PORT } from "../api/arbiter.js";
import { DEFAULT_MIGRATION_PORT } from "../api/migration.js";
import { DEFAULT_KEY_FILE } from "../channel/key.js";
import { DEFAULT_MAX_CHECKPOINT_INTERVAL_MS, DEFAULT_MIN_CHECKPOINT_GAP_MS } from "../colo/checkpoint-policy.js";
import { DEFAULT_HEARTBEAT_INTERVAL_MS, DEFAULT_PEER_TIMEOUT_MS } from "../colo/heartbeat.js";
import { DEFAULT_LEASE_TTL_MS } from "../colo/lease.js";
import { DEFAULT_COMPARE_TIMEOUT_MS } from "../colo/net/comparator.js";
import { arbiterAddress, givenFlags, nonNegativeInt, positiveInt } from "./arg-types.js";
import { CliError } from "./output.js";
import { coloVm, remusVm, withReprotectOptions } from "./replication.js";

interface ProtectOptions {
  keyFile: string;
  config?: string;
  remus?: boolean;
  interval: number;
  compareTimeout: number;
  checkpointMinGap: number;
  checkpointMaxInterval: number;
  peerTimeout: number;
  heartbeat: number;
  arbiter?: string;
  lease: number;
  reprotect?: string;
  reprotectConfig?: string;
  fullDiskSync?: boolean;
}

export function addProtectCommand(p: Command): void {
  const protect = p.command("protect");
  protect
    .description("protect a running, unprotected VM (e.g. the survivor of a failover) with a new secondary: COLO compare mode, or Remus mode with --remus")
    .argument("<name>")
    .argument("<host[:port]>", `the new secondary, running colo migrate-receive --colo (default port ${DEFAULT_MIGRATION_PORT})`)
    .option("--key-file <file>", "shared key (colo keygen)", DEFAULT_KEY_FILE)
    .option("-C, --config <cfg>", "the config the secondary runs (its own disk images, the same VM name)")
    .option("--remus", "Remus mode (checkpoints every --interval, output held until acknowledged) instead of COLO compare mode")
    .option("--interval <ms>", "with --remus: checkpoint interval", positiveInt, 100)
    .option("--compare-timeout <ms>", "compare mode: a PVM packet the SVM has not matched after this long forces a checkpoint", positiveInt, DEFAULT_COMPARE_TIMEOUT_MS)
    .option("--checkpoint-min-gap <ms>", "compare mode: at most one checkpoint per this many ms", nonNegativeInt, DEFAULT_MIN_CHECKPOINT_GAP_MS)
    .option("--checkpoint-max-interval <ms>", "compare mode: a checkpoint at least this often", positiveInt, DEFAULT_MAX_CHECKPOINT_INTERVAL_MS)
    .option("--peer-timeout <ms>", "silence from the secondary that counts as its loss", positiveInt, DEFAULT_PEER_TIMEOUT_MS)
    .option("--heartbeat <ms>", "heartbeat interval toward the secondary", positiveInt, DEFAULT_HEARTBEAT_INTERVAL_MS)
    .option("--arbiter <addr[:port]|etcd://host:port,...>", `hold this arbiter's lease (colo arbiter, default port ${DEFAULT_ARBITER_PORT}; or an etcd cluster); run alone after losing the secondary only with it`, arbiterAddress)
    .option("--lease <ms>", "with --arbiter: lease time-to-live", positiveInt, DEFAULT_LEASE_TTL_MS)
    .option("--full-disk-sync", "hash every disk on both sides even when the activity logs prove which chunks differ (an image changed outside colo)");
  withReprotectOptions(protect, "primary").action(async (name: string, dest: string, o: ProtectOptions) => {
      const arbiter = {
        ...(o.arbiter ? { arbiter: o.arbiter, lease: o.lease } : {}),
        ...(o.reprotect !== undefined ? { reprotect: o.reprotect } : {}),
        ...(o.reprotectConfig !== undefined ? { reprotectConfig: o.reprotectConfig } : {}),
        ...(o.fullDiskSync ? { fullDiskSync: true } : {}),
      };
      if (o.remus) {
        const stray = givenFlags(protect, ["compareTimeout", "checkpointMinGap", "checkpointMaxInterval", "config"]);
        if (stray.length > 0) throw new CliError(`${stray.join(", ")} not with --remus (Remus mode: the secondary runs the VM's own config)`, 2);
        return remusVm(name, dest, { interval: o.interval, peerTimeout: o.peerTimeout, heartbeat: o.heartbeat, keyFile: o.keyFile, ...arbiter });
      }
      if (givenFlags(protect, ["interval"]).length > 0) throw new CliError("--interval only with --remus (compare mode checkpoints when outputs differ)", 2);
      return coloVm(name, dest, {
        keyFile: o.keyFile,
        ...(o.config ? { config: o.config } : {}),
        peerTimeout: o.peerTimeout,
        heartbeat: o.heartbeat,
        compareTimeout: o.compareTimeout,
        minGap: o.checkpointMinGap,
        maxInterval: o.checkpointMaxInterval,
        ...arbiter,
      });
    });
}
