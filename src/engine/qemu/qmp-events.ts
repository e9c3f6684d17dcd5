/**
 * The QMP events the QEMU engine listens to, with their data parsed into
 * typed values (QEMU 7.2 qapi/run-state.json, qapi/migration.json).
 */
import {
  GUEST_PANIC_ACTIONS,
  MIGRATION_STATUSES,
  SHUTDOWN_CAUSES,
  isOneOf,
  type GuestPanicAction,
  type MigrationStatus,
  type ShutdownCause,
} from "./qapi-enums.js";
import type { QmpClient } from "./qmp-client.js";
import { QmpError } from "./qmp-error.js";
import type { JsonObject, QmpEvent } from "./qmp-wire.js";

export const QMP_EVENTS = {
  SHUTDOWN: "SHUTDOWN",
  RESET: "RESET",
  STOP: "STOP",
  RESUME: "RESUME",
  MIGRATION: "MIGRATION",
  GUEST_PANICKED: "GUEST_PANICKED",
} as const;
export type QmpEventName = keyof typeof QMP_EVENTS;

/** The data of each event, typed. */
export interface QmpEventData {
  /** QEMU is shutting down (`guest`: the guest asked for it). */
  SHUTDOWN: { guest: boolean; reason: ShutdownCause };
  RESET: { guest: boolean; reason: ShutdownCause };
  /** The guest stopped (stop, a migration's end, an error). */
  STOP: Record<string, never>;
  RESUME: Record<string, never>;
  MIGRATION: { status: MigrationStatus };
  /** `info` (the guest's crash registers) is left unparsed. */
  GUEST_PANICKED: { action: GuestPanicAction };
}

type Parser<K extends QmpEventName> = (data: JsonObject) => QmpEventData[K] | string;

function parseShutdownLike(data: JsonObject): { guest: boolean; reason: ShutdownCause } | string {
  if (typeof data.guest !== "boolean") return "guest is not a boolean";
  if (!isOneOf(SHUTDOWN_CAUSES, data.reason)) return `reason ${JSON.stringify(data.reason)} is not a ShutdownCause`;
  return { guest: data.guest, reason: data.reason };
}

const PARSERS: { [K in QmpEventName]: Parser<K> } = {
  SHUTDOWN: parseShutdownLike,
  RESET: parseShutdownLike,
  STOP: () => ({}),
  RESUME: () => ({}),
  MIGRATION: (data) =>
    isOneOf(MIGRATION_STATUSES, data.status) ? { status: data.status } : `status ${JSON.stringify(data.status)} is not a MigrationStatus`,
  GUEST_PANICKED: (data) =>
    isOneOf(GUEST_PANIC_ACTIONS, data.action) ? { action: data.action } : `action ${JSON.stringify(data.action)} is not a GuestPanicAction`,
};

/** Parses an event's data; a string says what is wrong with it. */
export function parseEventData<K extends QmpEventName>(name: K, event: QmpEvent): QmpEventData[K] | string {
  const parser: Parser<K> = PARSERS[name];
  return parser(event.data);
}

/**
 * Subscribes to `name` with typed data. Data QEMU documents otherwise
 * means we do not understand this QEMU: the connection is failed with
 * BAD_REPLY (close handlers see why) and the handler is not called.
 */
export function onQmpEvent<K extends QmpEventName>(
  client: QmpClient,
  name: K,
  handler: (data: QmpEventData[K], event: QmpEvent) => void,
): () => void {
  return client.on(QMP_EVENTS[name], (event) => {
    const data = parseEventData(name, event);
    if (typeof data === "string") {
      client.fail(new QmpError(client.vm, "BAD_REPLY", `QMP event ${name} from ${client.vm} has bad data: ${data}`));
      return;
    }
    handler(data, event);
  });
}
