/**
 * The QMP commands the QEMU engine uses, each a typed method with its own
 * reply parser (QEMU 7.2 qapi/*.json). A reply that is not what QEMU
 * documents rejects with QmpError BAD_REPLY naming the command.
 */
import {
  MIGRATION_STATUSES,
  RUN_STATES,
  isOneOf,
  type MigrationCapability,
  type MigrationStatus,
  type RunState,
} from "./qapi-enums.js";
import type { QmpCallOptions, QmpClient } from "./qmp-client.js";
import { QmpError } from "./qmp-error.js";
import { isJsonObject, parseQemuVersion, type JsonValue, type QemuVersion } from "./qmp-wire.js";

export interface QemuStatus {
  running: boolean;
  status: RunState;
}

export interface MigrationInfo {
  /** "none" when no migration was ever started (QEMU then returns `{}`). */
  status: MigrationStatus;
  /** Why a migration failed (`error-desc`), when QEMU says. */
  errorDesc?: string;
  /** `total-time` in ms, when QEMU reports it. */
  totalTimeMs?: number;
}

export interface MigrationCapabilityState {
  capability: MigrationCapability;
  state: boolean;
}

export class QmpCommands {
  constructor(readonly client: QmpClient) {}

  /** Pauses the guest's vCPUs (a STOP event follows). */
  async stop(opts?: QmpCallOptions): Promise<void> {
    await this.run("stop", undefined, opts);
  }

  /** Resumes the guest's vCPUs (a RESUME event follows). */
  async cont(opts?: QmpCallOptions): Promise<void> {
    await this.run("cont", undefined, opts);
  }

  async queryStatus(opts?: QmpCallOptions): Promise<QemuStatus> {
    const r = await this.run("query-status", undefined, opts);
    if (!isJsonObject(r) || typeof r.running !== "boolean" || !isOneOf(RUN_STATES, r.status)) {
      throw this.badReply("query-status", r, "{running: boolean, status: RunState}");
    }
    return { running: r.running, status: r.status };
  }

  /** The names of every command this QEMU accepts (probe once, at start). */
  async queryCommands(opts?: QmpCallOptions): Promise<Set<string>> {
    const r = await this.run("query-commands", undefined, opts);
    if (!Array.isArray(r)) throw this.badReply("query-commands", r, "a list of {name}");
    const names = new Set<string>();
    for (const entry of r) {
      if (!isJsonObject(entry) || typeof entry.name !== "string") throw this.badReply("query-commands", entry, "{name: string}");
      names.add(entry.name);
    }
    return names;
  }

  async queryVersion(opts?: QmpCallOptions): Promise<QemuVersion> {
    const r = await this.run("query-version", undefined, opts);
    const version = parseQemuVersion(r);
    if (typeof version === "string") throw this.badReply("query-version", r, version);
    return version;
  }

  async migrateSetCapabilities(capabilities: readonly MigrationCapabilityState[], opts?: QmpCallOptions): Promise<void> {
    const list: JsonValue[] = capabilities.map((c) => ({ capability: c.capability, state: c.state }));
    await this.run("migrate-set-capabilities", { capabilities: list }, opts);
  }

  /** Starts an outgoing migration (returns at once; poll queryMigrate or wait for MIGRATION events). */
  async migrate(uri: string, opts?: QmpCallOptions): Promise<void> {
    await this.run("migrate", { uri }, opts);
  }

  async queryMigrate(opts?: QmpCallOptions): Promise<MigrationInfo> {
    const r = await this.run("query-migrate", undefined, opts);
    if (!isJsonObject(r)) throw this.badReply("query-migrate", r, "an object");
    const status = r.status ?? "none";
    if (!isOneOf(MIGRATION_STATUSES, status)) throw this.badReply("query-migrate", r.status, "a MigrationStatus");
    const info: MigrationInfo = { status };
    if (r["error-desc"] !== undefined) {
      if (typeof r["error-desc"] !== "string") throw this.badReply("query-migrate", r["error-desc"], "error-desc: string");
      info.errorDesc = r["error-desc"];
    }
    if (r["total-time"] !== undefined) {
      if (typeof r["total-time"] !== "number") throw this.badReply("query-migrate", r["total-time"], "total-time: number");
      info.totalTimeMs = r["total-time"];
    }
    return info;
  }

  /** Starts loading an incoming migration (QEMU started with `-incoming defer`). */
  async migrateIncoming(uri: string, opts?: QmpCallOptions): Promise<void> {
    await this.run("migrate-incoming", { uri }, opts);
  }

  /** Writes the device state without RAM to `filename` (synchronous in QEMU; the guest should be stopped). */
  async xenSaveDevicesState(filename: string, opts?: QmpCallOptions): Promise<void> {
    await this.run("xen-save-devices-state", { filename, live: false }, opts);
  }

  /** Asks QEMU to exit; its reply may be lost in the close (the caller reaps the process). */
  async quit(opts?: QmpCallOptions): Promise<void> {
    await this.run("quit", undefined, opts);
  }

  async systemReset(opts?: QmpCallOptions): Promise<void> {
    await this.run("system_reset", undefined, opts);
  }

  /** An HMP command line; resolves with its text output. For diagnostics, not for the engine's protocol. */
  async humanMonitorCommand(commandLine: string, opts?: QmpCallOptions): Promise<string> {
    const r = await this.run("human-monitor-command", { "command-line": commandLine }, opts);
    if (typeof r !== "string") throw this.badReply("human-monitor-command", r, "a string");
    return r;
  }

  private run(command: string, args: Readonly<Record<string, JsonValue>> | undefined, opts: QmpCallOptions | undefined): Promise<unknown> {
    return this.client.execute(command, args, opts);
  }

  private badReply(command: string, value: unknown, expected: string): QmpError {
    let shown: string;
    try {
      shown = JSON.stringify(value)?.slice(0, 200) ?? String(value);
    } catch {
      shown = String(value);
    }
    return new QmpError(this.client.vm, "BAD_REPLY", `QMP command ${command} on ${this.client.vm}: reply ${shown} is not ${expected}`, { command });
  }
}
