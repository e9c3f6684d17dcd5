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
import { migrateOut } from "./migration.js";
import { openStreamCapture } from "./stream-capture.js";
import { elapsedMs, monotonicMs } from "../sys/clock.js";

/** What a save or a migration needs of the daemon. */
export interface TransferDaemon {
  readonly log: Logger;
  requireVm(): Vm;
  requireSource(): ConfigSource;
  shutdown(code: number, reason: string): Promise<void>;
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

export async function migrateVm(
  daemon: TransferDaemon,
  host: string,
  port: number,
  keyFile: string,
  configPath: string | undefined,
  emit: (event: unknown) => void,
): Promise<unknown> {
  const vm = daemon.requireVm();
  if (vm.state !== "running") throw new Error(`${vm.name} is ${vm.state}: only a running VM migrates live`);
  const key = loadKey(keyFile);
  let source = daemon.requireSource();
  if (configPath) source = { path: configPath, text: await readFile(configPath, "utf8") };
  daemon.log.info({ to: `${host}:${port}` }, "migrating out");
  try {
    const outcome = await migrateOut(
      vm.machine,
      source,
      { host, port },
      key,
      () => vm.pause(),
      (p) => emit({ progress: p }),
      () => openStreamCapture(vm.name, "migration", daemon.log),
    );
    if (!outcome.answer.ok) throw new Error(`the destination refused the migration: ${outcome.answer.error}`);
    const result = {
      to: `${host}:${port}`,
      rounds: outcome.send.rounds,
      pages: outcome.send.pages,
      zeroPages: outcome.send.zeroPages,
      bytes: outcome.send.bytes,
      totalMs: outcome.send.totalMs,
      downtimeMs: outcome.downtimeMs,
      finalPages: outcome.send.finalPages,
    };
    daemon.log.info(result, "migrated; the destination runs the VM");
    setImmediate(() => void daemon.shutdown(0, `migrated to ${host}:${port}`));
    return result;
  } catch (err) {
    daemon.log.warn({ err }, "migration failed; resuming here");
    const state: string = vm.state; // changed by the pause inside migrateOut
    if (state === "paused") await vm.unpause();
    throw err;
  }
}
