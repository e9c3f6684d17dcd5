import { formatArbiterAddress, parseArbiterAddress } from "../api/arbiter-address.js";
import { DEFAULT_LEASE_TTL_MS } from "../colo/lease.js";
import { resolve } from "node:path";
import { request } from "../api/control-client.js";
import { vmRunFiles } from "../api/paths.js";
import { findVm } from "../api/registry.js";
import { DEFAULT_MIGRATION_PORT } from "../api/migration.js";
import { DEFAULT_KEY_FILE, generateKeyFile, loadKey } from "../channel/key.js";
import { formatEndpoint, parseEndpoint } from "../channel/secure-channel.js";
import { spawnDaemon } from "./daemon-spawn.js";
import type { TransferProgress } from "../state/machine-transfer.js";
import { fail } from "./output.js";
import { reprotectFields } from "./replication.js";

/** Progress events arrive as JSON: checked before use. */
type ProgressLike = TransferProgress;

function isProgress(v: unknown): v is ProgressLike {
  const p = v as Partial<ProgressLike> | null;
  return typeof p === "object" && p !== null && typeof p.round === "number" && typeof p.pages === "number" && typeof p.mbPerSec === "number";
}

function progressLine(prefix: string, p: ProgressLike): string {
  return `${prefix}: round ${p.round}${p.final ? " (final, guest paused)" : ""}: ${p.pages} pages (${p.zeroPages} zero), ${(p.bytes / 2 ** 20).toFixed(1)} MiB at ${p.mbPerSec.toFixed(1)} MB/s, ${Math.round(p.pagesPerSec)} pages/s\n`;
}

/** `colo save [-c] NAME FILE`, like `xl save`: the VM is destroyed after saving unless -c. */
export async function saveVm(name: string, file: string, o: { continue?: boolean }): Promise<void> {
  if (!findVm(name)) fail(`no VM named ${name} is running (see colo list)`);
  const path = resolve(file);
  const r = (await request(vmRunFiles(name).socket, { op: "save", path, keepRunning: o.continue === true }, 600_000)) as {
    bytes: number;
    pages: number;
    zeroPages: number;
    ms: number;
    destroyed: boolean;
  };
  process.stdout.write(
    `${name}: saved to ${path}: ${(r.bytes / 2 ** 20).toFixed(1)} MiB, ${r.pages} pages (${r.zeroPages} zero) in ${r.ms} ms; ${r.destroyed ? "VM destroyed" : "VM continues"}\n`,
  );
}

/** `colo restore FILE`: a VM continues where it was saved. */
export async function restoreVm(file: string, o: { timeout: number }): Promise<void> {
  const path = resolve(file);
  const { pid, report } = await spawnDaemon(["--restore", path], { what: `restore ${path}`, logName: "restore.log", timeoutS: o.timeout });
  if (report.type === "ready") process.stdout.write(`restored from ${path} in ${(report.bootMs / 1000).toFixed(2)} s; daemon pid ${pid}\n`);
}

/** `colo migrate NAME HOST[:PORT]`: live migration with pre-copy; progress per round. */
export async function migrateVm(name: string, dest: string, o: { keyFile: string; config?: string; arbiter?: string }): Promise<void> {
  if (!findVm(name)) fail(`no VM named ${name} is running (see colo list)`);
  const to = parseEndpoint(dest, DEFAULT_MIGRATION_PORT);
  const keyFile = resolve(o.keyFile);
  loadKey(keyFile); // a bad key file is this command's error, before anything moves
  const result = (await request(
    vmRunFiles(name).socket,
    {
      op: "migrate",
      host: to.host,
      port: to.port,
      keyFile,
      ...(o.config ? { configPath: resolve(o.config) } : {}),
      ...(o.arbiter ? { arbiter: formatArbiterAddress(parseArbiterAddress(o.arbiter)) } : {}),
    },
    120_000,
    (event) => {
      const p = (event as { progress?: unknown }).progress;
      if (isProgress(p)) process.stdout.write(progressLine(`${name} -> ${formatEndpoint(to)}`, p));
    },
  )) as { rounds: number; pages: number; bytes: number; totalMs: number; downtimeMs: number; committed?: string };
  process.stdout.write(
    `${name}: migrated to ${formatEndpoint(to)} in ${result.totalMs} ms (${result.rounds} rounds, ${result.pages} pages, ${(result.bytes / 2 ** 20).toFixed(1)} MiB); downtime ${result.downtimeMs} ms\n`,
  );
  if (result.committed) process.stdout.write(`${name}: handover: ${result.committed}\n`);
}

/** `colo migrate-receive`: waits for one incoming migration; returns when the VM runs here. */
export async function migrateReceive(o: {
  listen: string;
  keyFile: string;
  timeout: number;
  detach?: boolean;
  colo?: boolean;
  peerTimeout?: number;
  heartbeat?: number;
  arbiter?: string;
  lease?: number;
  reprotect?: string;
  reprotectConfig?: string;
}): Promise<void> {
  if ((o.reprotect !== undefined || o.reprotectConfig !== undefined) && !o.colo) fail("--reprotect needs --colo");
  const again = reprotectFields(o).reprotect;
  const at = parseEndpoint(o.listen, DEFAULT_MIGRATION_PORT);
  const keyFile = resolve(o.keyFile);
  loadKey(keyFile);
  if (o.arbiter && !o.colo) fail("--arbiter needs --colo");
  const reprotect = again ? ["--colo-reprotect", formatEndpoint(again), ...(again.configPath ? ["--colo-reprotect-config", again.configPath] : [])] : [];
  const arbiter = o.arbiter ? ["--colo-arbiter", formatArbiterAddress(parseArbiterAddress(o.arbiter)), "--colo-lease", String(o.lease ?? DEFAULT_LEASE_TTL_MS)] : [];
  const colo = o.colo ? ["--colo-peer-timeout", String(o.peerTimeout ?? 1000), "--colo-heartbeat", String(o.heartbeat ?? 200), ...arbiter, ...reprotect] : [];
  const { pid, report } = await spawnDaemon(["--incoming", formatEndpoint(at), "--key-file", keyFile, "--accept-timeout", String(o.timeout), ...colo], {
    what: `migrate-receive on ${formatEndpoint(at)}`,
    logName: `incoming-${at.port}.log`,
    timeoutS: o.timeout + 600,
    onReport: (r) => {
      if (r.type === "listening") process.stdout.write(`listening on ${formatEndpoint({ host: r.host, port: r.port })}\n`);
      if (r.type === "progress" && isProgress(r.progress) && !o.detach) process.stdout.write(progressLine("incoming", r.progress));
    },
    ...(o.detach ? { returnOn: "listening" as const } : {}),
  });
  if (report.type === "ready") process.stdout.write(`${report.line}: ${o.colo ? "VM replicated here" : "VM running here"} (daemon pid ${pid})\n`);
}

/** `colo keygen FILE`: a new shared key for migration and replication channels. */
export function keygen(file: string | undefined, o: { force?: boolean }): void {
  const path = resolve(file ?? DEFAULT_KEY_FILE);
  generateKeyFile(path, o.force === true);
  process.stdout.write(`${path}: new key (copy it to the other host, mode 600)\n`);
}
