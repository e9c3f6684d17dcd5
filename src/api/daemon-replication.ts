/**
 * Wiring a daemon's VM into replication (src/colo): the primary side
 * (`colo remus`, a control request), the secondary side (built while the
 * VM receives checkpoint 0, daemon-start.ts), their disks and the lease
 * each holds with the arbiter.
 */
import { mkdirSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { loadKey } from "../channel/key.js";
import { connectSecure } from "../channel/secure-channel.js";
import { DEFAULT_MAX_CHECKPOINT_INTERVAL_MS, DEFAULT_MIN_CHECKPOINT_GAP_MS } from "../colo/checkpoint-policy.js";
import type { ForwardedDisk } from "../colo/disk-forwarder.js";
import { DEFAULT_LEASE_TTL_MS, type ArbiterOptions } from "../colo/lease.js";
import { DEFAULT_COMPARATOR_OPTIONS, DEFAULT_COMPARE_TIMEOUT_MS } from "../colo/net/comparator.js";
import { carriedOf } from "../colo/net/link-translation.js";
import { PrimaryReplicator } from "../colo/primary.js";
import { SecondaryReplicator, type SecondaryDiskSlot } from "../colo/secondary.js";
import type { BlockBackend, Engine } from "../engine/engine.js";
import type { VmConfig } from "../config/index.js";
import { bufferAddress } from "../sys/index.js";
import type { Vm } from "../vm/vm.js";
import { arbiterLoaded, newArbiterClient, parseArbiterAddress, type ArbiterAddress } from "./arbiter-address.js";
import type { ConfigSource } from "./image-io.js";
import type { Logger } from "./log.js";
import type { Incoming } from "./migration.js";
import { currentNetnsName, runDir } from "./paths.js";
import type { ControlRequest, ReprotectTarget } from "./protocol.js";
import { openStreamCapture } from "./stream-capture.js";
import { imageLogOf } from "./disk-logs.js";

/** What starting a primary's replication needs of the daemon. */
export interface ReplicationDaemon {
  readonly log: Logger;
  requireVm(): Vm;
  requireSource(): ConfigSource;
  primary(): PrimaryReplicator | undefined;
  secondary(): SecondaryReplicator | undefined;
  setPrimary(primary: PrimaryReplicator): void;
  /** The session `r` started (checkpoint 0 is on the secondary): from now on its loss may lead to re-protection. */
  sessionRunning(primary: PrimaryReplicator, r: Extract<ControlRequest, { op: "remus" }>): void;
  shutdown(code: number, reason: string): Promise<void>;
}

/** What a secondary's replicator needs of the daemon. */
export interface SecondaryDaemon {
  readonly log: Logger;
  /** After a takeover: a stop the replica had made since the last checkpoint is the VM's now. */
  actOnStopLeftByReplica(): void;
  shutdown(code: number, reason: string): Promise<void>;
}

/** A secondary's replication settings (`colo migrate-receive --colo`). */
export interface SecondarySettings {
  timeoutMs: number;
  heartbeatMs: number;
  arbiter?: ArbiterAddress;
  leaseMs?: number;
  /** After a takeover, protect the survivor again toward this host (`--reprotect`; daemon-reprotect.ts). */
  reprotect?: ReprotectTarget;
}

/** `colo remus`: this daemon's running VM becomes the primary of a replication session to `r.host`. */
export async function startReplication(daemon: ReplicationDaemon, r: Extract<ControlRequest, { op: "remus" }>): Promise<unknown> {
  const vm = daemon.requireVm();
  const mode = r.mode ?? "remus";
  if (vm.state !== "running") throw new Error(`${vm.name} is ${vm.state}: only a running VM can be protected`);
  const current = daemon.primary();
  if (current && current.stats.mode === "primary") throw new Error(`${vm.name} is already replicating to ${current.stats.peer}`);
  const secondary = daemon.secondary();
  if (secondary && !secondary.done) throw new Error(`${vm.name} is the secondary of a replication session here: protect it from its primary`);
  const key = loadKey(r.keyFile);
  let source = daemon.requireSource();
  if (r.configPath) source = { path: r.configPath, text: await readFile(r.configPath, "utf8") };
  const arbiter = r.arbiter ? arbiterFor(parseArbiterAddress(r.arbiter), key, vm.name, r.leaseMs) : undefined;
  // The primary asks for its lease as it starts: etcd's client loads first, so its load does not shorten the first lease.
  if (arbiter) await arbiterLoaded(arbiter.arbiter);
  const socket = await connectSecure({ host: r.host, port: r.port }, key).catch((err: unknown) => {
    arbiter?.arbiter.close();
    throw err;
  });
  // The previous session's (or the takeover's) lease keeper hands over to this session's.
  await daemon.primary()?.stopLease();
  await daemon.secondary()?.stopLease();
  const delay = Number(process.env.COLO_TEST_CHECKPOINT_DELAY_MS ?? "0");
  const capture = openStreamCapture(vm.name, "replication", daemon.log);
  const primary = new PrimaryReplicator(
    {
      engine: vm.machine,
      pause: () => vm.pause(),
      resume: () => vm.unpause(),
      setOutputFilter: (f) => vm.setOutputFilter(f),
      setInputFilter: (f) => vm.setInputFilter(f),
      sendOutput: (f) => vm.sendOutput(f),
      disks: primaryDisks(vm, daemon.log),
      linkTranslation: () => carriedOf(vm.linkTranslation),
      end: (reason) => endSide(daemon, reason),
    },
    socket,
    `${r.host}:${r.port}`,
    {
      mode,
      intervalMs: r.intervalMs,
      ...(mode === "compare"
        ? {
            compare: {
              ...DEFAULT_COMPARATOR_OPTIONS,
              compareTimeoutMs: r.compareTimeoutMs ?? DEFAULT_COMPARE_TIMEOUT_MS,
              minGapMs: r.minGapMs ?? DEFAULT_MIN_CHECKPOINT_GAP_MS,
              maxIntervalMs: r.maxIntervalMs ?? DEFAULT_MAX_CHECKPOINT_INTERVAL_MS,
            },
          }
        : {}),
      timeoutMs: r.timeoutMs,
      heartbeatMs: r.heartbeatMs,
      log: (msg, fields) => daemon.log.warn(fields ?? {}, msg),
      ...(delay > 0 ? { midCheckpointDelayMs: delay } : {}),
      ...(arbiter ? { arbiter } : {}),
      ...(capture ? { capture: capture.sink } : {}),
      ...(r.fullDiskSync ? { fullDiskSync: true } : {}),
      addressOf: bufferAddress,
    },
  );
  if (capture) void primary.done.then(() => capture.close());
  daemon.setPrimary(primary);
  try {
    await primary.start(source);
  } catch (err) {
    void primary.stop(`replication start failed: ${(err as Error).message}`);
    throw err;
  }
  daemon.log.info({ peer: `${r.host}:${r.port}`, mode, intervalMs: r.intervalMs }, "replication running");
  daemon.sessionRunning(primary, r);
  return { peer: `${r.host}:${r.port}`, mode, intervalMs: r.intervalMs, checkpoint0Pages: primary.stats.lastPages, disks: primary.diskCount, ...(primary.started ? { start: primary.started } : {}) };
}

/**
 * The secondary of the session `inc` brings, over the VM that is receiving
 * checkpoint 0 into `engine` (called from the VM's `incoming`, before its
 * first vCPU runs). A takeover joins the LAN, runs and announces the VM.
 */
export function newSecondary(
  daemon: SecondaryDaemon,
  vm: Vm,
  engine: Engine,
  inc: Incoming,
  key: Buffer,
  colo: SecondarySettings,
): SecondaryReplicator {
  const { timeoutMs, heartbeatMs } = colo;
  return new SecondaryReplicator(
    {
      engine,
      disks: secondaryDiskSlots(vm, daemon.log),
      pause: () => vm.pause(),
      resume: () => vm.unpause(),
      setOutputFilter: (f) => vm.setOutputFilter(f),
      setInputFilter: (f) => vm.setInputFilter(f),
      setLinkTranslation: (t) => vm.setLinkTranslation(t),
      deliverInput: (f) => vm.deliverInput(f),
      sendOutput: (f) => vm.sendOutput(f),
      takeOver: async () => {
        vm.joinBridge();
        await vm.unpause();
        vm.announce();
        daemon.actOnStopLeftByReplica();
      },
      discard: (reason) => daemon.shutdown(0, reason),
      end: (reason) => endSide(daemon, reason),
    },
    inc.socket,
    inc.reader,
    inc.peer,
    {
      timeoutMs,
      heartbeatMs,
      log: (msg, fields) => daemon.log.warn(fields ?? {}, msg),
      ...(colo.arbiter ? { arbiter: arbiterFor(colo.arbiter, key, inc.config.name, colo.leaseMs) } : {}),
    },
  );
}

/**
 * A replicator cannot go on (a fence could not pause the VM, a resume
 * failed): the VM is destroyed — one that cannot be paused is killed — and
 * the daemon exits with 1, as after a failed takeover. The other side, or
 * the operator, decides from there.
 */
function endSide(daemon: { readonly log: Logger; shutdown(code: number, reason: string): Promise<void> }, reason: string): Promise<void> {
  daemon.log.error({ reason }, "replication: this side cannot go on; destroying the VM");
  return daemon.shutdown(1, reason);
}

/** This daemon's name as a lease holder (`colo check` looks for it in the arbiter's list). */
export function leaseHolderName(): string {
  // One holder per daemon, whatever its role: a survivor that is protected again keeps its own lease.
  return `${currentNetnsName() ?? "host"}:${process.pid}`;
}

/** The lease this side holds with the arbiter (built-in or etcd): one holder name per daemon. */
function arbiterFor(at: ArbiterAddress, key: Buffer, vmName: string, leaseMs: number | undefined): ArbiterOptions {
  return {
    arbiter: newArbiterClient(at, key),
    vm: vmName,
    holder: leaseHolderName(),
    ttlMs: leaseMs ?? DEFAULT_LEASE_TTL_MS,
  };
}

/** The primary's writable disks: every write is forwarded once replication starts. */
function primaryDisks(vm: Vm, logger: Logger): ForwardedDisk[] {
  const slots = vm.diskSlots();
  return vm.config.disks.flatMap((d, index) => {
    const slot = slots[index];
    if (!slot || d.access !== "rw") return [];
    return [
      {
        index,
        local: slot.raw,
        setWriteHook: (hook: ((offset: number, data: Uint8Array) => void) | undefined) => {
          slot.raw.onWrite = hook;
        },
        log: imageLogOf(slot.raw, logger),
        sync: () => slot.raw.flushAsync(),
      },
    ];
  });
}

/** Where a secondary's replicated disk `index` spills its overlays: active-disk's folder, else NAME.diskN in the run dir (`colo check` asks the same). */
export function spillDirOf(config: VmConfig, index: number): string {
  const d = config.disks[index];
  return d?.colo ? dirname(d.colo.activeDisk) : join(runDir(), `${config.name}.disk${index}`);
}

/** The secondary's writable disks, with where their overlays spill (spillDirOf). */
function secondaryDiskSlots(vm: Vm, logger: Logger): SecondaryDiskSlot[] {
  const slots = vm.diskSlots();
  return vm.config.disks.flatMap((d, index) => {
    const slot = slots[index];
    if (!slot || d.access !== "rw") return [];
    const spillDir = spillDirOf(vm.config, index);
    mkdirSync(spillDir, { recursive: true, mode: 0o700 });
    return [{ index, raw: slot.raw, spillDir, interpose: (layer: BlockBackend) => slot.interpose(layer), log: imageLogOf(slot.raw, logger), sync: () => slot.raw.flushAsync() }];
  });
}
