/**
 * How a daemon gets its VM: it boots one from a config (`colo create`),
 * restores a saved one (`colo restore`), receives a live migration
 * (`colo migrate-receive`) or becomes the secondary of a replication session
 * (`colo migrate-receive --colo`). Each reports ready (or throws) to the
 * parent once the VM is there.
 */
import { readFile } from "node:fs/promises";
import type { Readable } from "node:stream";
import { loadKey } from "../channel/key.js";
import type { Endpoint } from "../channel/secure-channel.js";
import { formatArbiterAddress } from "./arbiter-address.js";
import { DEFAULT_LEASE_TTL_MS } from "../colo/lease.js";
import { TranslationChain } from "../colo/net/link-translation.js";
import type { SecondaryReplicator } from "../colo/secondary.js";
import { parseVmConfig, type VmConfig } from "../config/index.js";
import type { StreamReader } from "../state/index.js";
import { GUEST_FAILED_MARKER, GUEST_READY_MARKER, type Vm } from "../vm/vm.js";
import { reportToParent as report } from "./daemon-ipc.js";
import { newSecondary, type SecondaryDaemon, type SecondarySettings } from "./daemon-replication.js";
import { openSaveFile, readConfig, readMachine, type ConfigSource } from "./image-io.js";
import { commitIn, decideAt } from "./handover.js";
import { acceptIncoming, STREAM_IDLE_TIMEOUT_MS, describeRejected, type AcceptOptions, type Incoming } from "./migration.js";
import { elapsedMs, monotonicMs } from "../sys/clock.js";
import { serveProbe } from "./check-probe.js";
import type { ReceiverRole } from "./check-protocol.js";
import { dropActivityLogs } from "./disk-logs.js";

/** How the daemon gets its VM. */
export type DaemonMode =
  | { kind: "boot"; configPath: string }
  | { kind: "restore"; file: string }
  | { kind: "incoming"; listen: Endpoint; keyFile: string; timeoutMs: number; colo?: SecondarySettings };

/** What starting a VM needs of the daemon. */
export interface StartDaemon extends SecondaryDaemon {
  /** Takes `source` as the VM's configuration, claims the VM's name on this host (run files, control socket); the VM, not started. */
  register(config: VmConfig, source: ConfigSource, vmOptions?: { deferBridge?: boolean }): Promise<Vm>;
  setSecondary(secondary: SecondaryReplicator): void;
  /** While a migration comes in (load, then the handover): requests other than status are refused, so no operator unpauses the copy before the source's go. */
  setBusy(what: string | undefined): void;
}

/**
 * A connection that did not start a migration: one log line (peer, what was
 * wrong, where in the stream); the wait goes on. A `colo check` probe is
 * answered (check-probe.ts) and logged in one line too.
 */
function acceptOptions(daemon: StartDaemon, receiver: ReceiverRole): AcceptOptions {
  return {
    onRejected: (r) => daemon.log.warn({ peer: r.peer, code: r.code, ...(r.offset === undefined ? {} : { offset: r.offset }) }, describeRejected(r)),
    probe: (socket) => serveProbe(socket, { receiver }),
    onProbe: (peer, summary) => daemon.log.info({ peer }, `${summary} from ${peer}`),
  };
}

export async function boot(daemon: StartDaemon, configPath: string): Promise<void> {
  let text: string;
  try {
    text = await readFile(configPath, "utf8");
  } catch (err) {
    throw new Error(`cannot read ${configPath}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const config = parseVmConfig(text, configPath);
  const vm = await daemon.register(config, { path: configPath, text });
  dropActivityLogs(config, daemon.log);
  daemon.log.info({ config: config.source }, "starting VM");
  const t0 = monotonicMs();
  const ready = vm.console.waitForLine(GUEST_READY_MARKER);
  const failed = vm.console.waitForLine(GUEST_FAILED_MARKER);
  await vm.start();
  daemon.log.info({ status: vm.status() }, "engine started, waiting for the guest");
  const outcome = await Promise.race([
    ready.promise.then((line) => ({ ok: true as const, line })),
    failed.promise.then((line) => ({ ok: false as const, line })),
  ]);
  ready.cancel();
  failed.cancel();
  if (!outcome.ok) throw new Error(`guest reported failure: ${outcome.line.trim()}`);
  const bootMs = elapsedMs(t0);
  daemon.log.info({ bootMs, line: outcome.line.trim() }, "guest ready");
  report({ type: "ready", line: outcome.line.trim(), bootMs });
}

export async function restore(daemon: StartDaemon, file: string): Promise<void> {
  const t0 = monotonicMs();
  let opened: { reader: StreamReader; file: Readable } | undefined;
  try {
    opened = openSaveFile(file);
    const { config, source } = await readConfig(opened.reader, file);
    const vm = await daemon.register(config, source);
    dropActivityLogs(config, daemon.log);
    const reader = opened.reader;
    await vm.start({
      incoming: async (engine) => {
        const r = await readMachine(engine, reader);
        daemon.log.info({ file, pages: r.pages, zeroPages: r.zeroPages, ms: r.totalMs }, "restored");
      },
    });
  } finally {
    opened?.file.destroy();
  }
  report({ type: "ready", line: `restored from ${file}`, bootMs: elapsedMs(t0) });
}

export async function incoming(daemon: StartDaemon, listen: Endpoint, keyFile: string, timeoutMs: number): Promise<void> {
  const key = loadKey(keyFile);
  const inc: Incoming = await acceptIncoming(listen, key, timeoutMs, (address) => {
    daemon.log.info({ address }, "waiting for a migration");
    report({ type: "listening", host: address.host, port: address.port });
  }, acceptOptions(daemon, { colo: false }));
  daemon.log.info({ from: inc.peer, vm: inc.config.name }, "incoming migration");
  const t0 = monotonicMs();
  let vm: Vm | undefined;
  try {
    vm = await daemon.register(inc.config, inc.source);
    dropActivityLogs(inc.config, daemon.log);
    daemon.setBusy("receiving a migration");
    let loadedAt = 0;
    // The copy stays paused until the source's go (handover.ts): before it, any failure leaves the source the one copy.
    inc.socket.setTimeout(STREAM_IDLE_TIMEOUT_MS, () => inc.socket.destroy(new Error(`the source sent nothing for ${STREAM_IDLE_TIMEOUT_MS / 1000} s`)));
    await vm.start({
      stayPaused: true,
      incoming: async (engine) => {
        const r = await readMachine(engine, inc.reader, (p) => report({ type: "progress", progress: p }));
        inc.socket.setTimeout(0);
        // A survivor's connections keep the numbers their clients know here too (before the guest runs).
        if (r.linkLayers && r.linkLayers.length > 0) vm?.setLinkTranslation(TranslationChain.restore(r.linkLayers));
        loadedAt = monotonicMs();
        daemon.log.info({ rounds: r.rounds, pages: r.pages, zeroPages: r.zeroPages, finalPhaseMs: r.finalPhaseMs }, "machine received");
      },
    });
    const holder = `destination@${listen.host}:${listen.port}`;
    const verdict = await commitIn(inc.lines, elapsedMs(loadedAt), {
      decide: (req) => decideAt(req.arbiter, key, req.key, holder),
      onStep: (step) => daemon.log.info({ step }, "handover"),
    });
    if (verdict.kind === "abort") throw new Error(`the migration was not committed: ${verdict.reason}`);
    daemon.log.info({ how: verdict.how }, "handover: resuming here");
    await vm.unpause();
    vm.announce();
    daemon.setBusy(undefined);
    await inc.answer({ ok: true, resumeMs: elapsedMs(loadedAt) });
  } catch (err) {
    // "Not committed" tells the source to resume: this copy goes first (a resume that failed may still have run it).
    await vm?.destroy().catch(() => undefined);
    await inc.answer({ ok: false, error: (err as Error).message });
    inc.socket.end();
    throw err;
  }
  inc.socket.end();
  report({ type: "ready", line: `migrated in from ${inc.peer}`, bootMs: elapsedMs(t0) });
}

/** `colo migrate-receive --colo`: become the secondary of a replication session. */
export async function incomingSecondary(
  daemon: StartDaemon,
  listen: Endpoint,
  keyFile: string,
  acceptTimeoutMs: number,
  colo: SecondarySettings,
): Promise<void> {
  const key = loadKey(keyFile);
  const inc: Incoming = await acceptIncoming(listen, key, acceptTimeoutMs, (address) => {
    daemon.log.info({ address }, "waiting for a primary");
    report({ type: "listening", host: address.host, port: address.port });
  }, acceptOptions(daemon, { colo: true, ...(colo.arbiter ? { arbiter: formatArbiterAddress(colo.arbiter), leaseMs: colo.leaseMs ?? DEFAULT_LEASE_TTL_MS } : {}) }));
  daemon.log.info({ from: inc.peer, vm: inc.config.name }, "replication from a primary");
  const t0 = monotonicMs();
  const vm = await daemon.register(inc.config, inc.source, { deferBridge: true });
  let secondary: SecondaryReplicator | undefined;
  await vm.start({
    stayPaused: true,
    incoming: async (engine) => {
      secondary = newSecondary(daemon, vm, engine, inc, key, colo);
      await secondary.receiveInitial();
    },
  });
  if (!secondary) throw new Error("internal: the secondary was not set up");
  daemon.setSecondary(secondary);
  // A takeover that fails (the engine cannot load the last checkpoint, the VM cannot take over) leaves no VM to run: say so and end.
  secondary.run().catch((err: unknown) => {
    daemon.log.error({ error: (err as Error).message }, "takeover failed; this host has no copy it can run");
    void daemon.shutdown(1, `takeover failed: ${(err as Error).message}`);
  });
  report({ type: "ready", line: `secondary of ${inc.peer} (${secondary.mode} mode): holds checkpoint 0`, bootMs: elapsedMs(t0) });
}
