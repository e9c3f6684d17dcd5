/**
 * The VM leaving this daemon whole: `colo save` (to a file) and
 * `colo migrate` (live, to another host's `colo migrate-receive`). Both run
 * as the daemon's exclusive operation; on success (and unless a save keeps
 * the VM running) the daemon ends after answering.
 */
import { readFile } from "node:fs/promises";
import { loadKey } from "../channel/key.js";
import type { Vm } from "../vm/vm.js";
import { saveToFile, type ConfigSource } from "./image-io.js";
import type { Logger } from "./log.js";
import type { Arbiter } from "../colo/lease.js";
import { newArbiterClient, parseArbiterAddress } from "./arbiter-address.js";
import { handoverKey, type SourceCommitOptions } from "./handover.js";
import { migrateOut, type MigrateOutcome } from "./migration.js";
import { openStreamCapture } from "./stream-capture.js";
import { elapsedMs, monotonicMs } from "../sys/clock.js";
import { linkLayersOf } from "../colo/net/link-translation.js";
import type { LinkTranslationLayers } from "../state/index.js";

/** A survivor's link translations for the migration stream (LINK_TRANSLATION), if it has any. */
function withLinkLayers(vm: Vm): { linkLayers?: LinkTranslationLayers } {
  const layers = linkLayersOf(vm.linkTranslation);
  return layers ? { linkLayers: layers } : {};
}

/** What a save or a migration needs of the daemon. */
export interface TransferDaemon {
  readonly log: Logger;
  requireVm(): Vm;
  requireSource(): ConfigSource;
  shutdown(code: number, reason: string): Promise<void>;
  /** A migration left the VM paused here with nobody able to say where it runs (status `handover`; unpause needs --force). */
  setHandover(h: { state: "indeterminate"; to: string; reason: string }): void;
}

export async function saveVm(daemon: TransferDaemon, path: string, keepRunning: boolean): Promise<unknown> {
  const vm = daemon.requireVm();
  const source = daemon.requireSource();
  const wasRunning = vm.state === "running";
  await vm.pause();
  const t0 = monotonicMs();
  try {
    const r = await saveToFile(vm.machine, path, source);
    daemon.log.info({ path, bytes: r.bytes, pages: r.pages, zeroPages: r.zeroPages, ms: elapsedMs(t0) }, "saved");
    if (keepRunning) {
      if (wasRunning) await vm.unpause();
    } else {
      setImmediate(() => void daemon.shutdown(0, `saved to ${path}`));
    }
    return { path, bytes: r.bytes, pages: r.pages, zeroPages: r.zeroPages, ms: elapsedMs(t0), destroyed: !keepRunning };
  } catch (err) {
    if (wasRunning) await vm.unpause();
    throw err;
  }
}

/** A migration whose handover nobody can settle: the VM stays paused here (handover.ts). */
export class IndeterminateMigration extends Error {
  override readonly name = "IndeterminateMigration";
}

export async function migrateVm(
  daemon: TransferDaemon,
  request: { host: string; port: number; keyFile: string; configPath?: string; arbiter?: string },
  emit: (event: unknown) => void,
): Promise<unknown> {
  const { host, port } = request;
  const vm = daemon.requireVm();
  if (vm.state !== "running") throw new Error(`${vm.name} is ${vm.state}: only a running VM migrates live`);
  const key = loadKey(request.keyFile);
  let source = daemon.requireSource();
  if (request.configPath) source = { path: request.configPath, text: await readFile(request.configPath, "utf8") };
  const to = `${host}:${port}`;
  daemon.log.info({ to, arbiter: request.arbiter }, "migrating out");
  let arbiter: Arbiter | undefined;
  let decider: SourceCommitOptions["decider"];
  if (request.arbiter) {
    arbiter = newArbiterClient(parseArbiterAddress(request.arbiter), key);
    decider = { arbiter, key: handoverKey(vm.name), holder: `source@${vm.name}`, endpoint: request.arbiter };
  }
  let outcome: MigrateOutcome;
  try {
    outcome = await migrateOut(vm.machine, source, { host, port }, key, () => vm.pause(), (p) => emit({ progress: p }), {
      openCapture: () => openStreamCapture(vm.name, "migration", daemon.log),
      ...withLinkLayers(vm),
      commit: { ...(decider ? { decider } : {}), onStep: (step) => daemon.log.info({ step }, "handover") },
    });
  } catch (err) {
    // Before the go: the destination never runs its copy.
    daemon.log.warn({ err }, "migration failed; resuming here");
    const state: string = vm.state; // changed by the pause inside migrateOut
    if (state === "paused") await vm.unpause();
    throw err;
  } finally {
    arbiter?.close();
  }
  const o = outcome.outcome;
  if (o.kind === "stayed") {
    daemon.log.warn({ reason: o.reason }, "migration not committed; resuming here");
    await vm.unpause();
    throw new Error(o.reason);
  }
  if (o.kind === "indeterminate") {
    daemon.setHandover({ state: "indeterminate", to, reason: o.reason });
    daemon.log.error({ reason: o.reason }, "migration indeterminate: the VM stays paused here");
    throw new IndeterminateMigration(
      `${o.reason}. ${vm.name} stays paused here: if the destination does not run it, \`colo unpause --force ${vm.name}\`; if it does, \`colo destroy ${vm.name}\``,
    );
  }
  const result = {
    to,
    rounds: outcome.send.rounds,
    pages: outcome.send.pages,
    zeroPages: outcome.send.zeroPages,
    bytes: outcome.send.bytes,
    totalMs: outcome.send.totalMs,
    downtimeMs: outcome.downtimeMs,
    finalPages: outcome.send.finalPages,
    committed: o.how,
  };
  daemon.log.info(result, "migrated; the destination runs the VM");
  setImmediate(() => void daemon.shutdown(0, `migrated to ${to}`));
  return result;
}
