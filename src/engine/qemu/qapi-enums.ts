/**
 * QAPI enumerations the QEMU engine reads or writes, as QEMU 7.2 defines
 * them (qapi/run-state.json, qapi/migration.json; checked against
 * `query-qmp-schema` of Debian's 7.2.22). A value outside these lists is a
 * reply we do not understand (BAD_REPLY): add it here when a newer QEMU is
 * supported, with its source.
 */

/** qapi/run-state.json `RunState`. */
export const RUN_STATES = [
  "debug",
  "inmigrate",
  "internal-error",
  "io-error",
  "paused",
  "postmigrate",
  "prelaunch",
  "finish-migrate",
  "restore-vm",
  "running",
  "save-vm",
  "shutdown",
  "suspended",
  "watchdog",
  "guest-panicked",
  "colo",
] as const;
export type RunState = (typeof RUN_STATES)[number];

/** qapi/run-state.json `ShutdownCause` (SHUTDOWN and RESET events). */
export const SHUTDOWN_CAUSES = [
  "none",
  "host-error",
  "host-qmp-quit",
  "host-qmp-system-reset",
  "host-signal",
  "host-ui",
  "guest-shutdown",
  "guest-reset",
  "guest-panic",
  "subsystem-reset",
  "snapshot-load",
] as const;
export type ShutdownCause = (typeof SHUTDOWN_CAUSES)[number];

/** qapi/run-state.json `GuestPanicAction` (GUEST_PANICKED event). */
export const GUEST_PANIC_ACTIONS = ["pause", "poweroff", "run"] as const;
export type GuestPanicAction = (typeof GUEST_PANIC_ACTIONS)[number];

/** qapi/migration.json `MigrationStatus`. */
export const MIGRATION_STATUSES = [
  "none",
  "setup",
  "cancelling",
  "cancelled",
  "active",
  "postcopy-active",
  "postcopy-paused",
  "postcopy-recover",
  "completed",
  "failed",
  "colo",
  "pre-switchover",
  "device",
  "wait-unplug",
] as const;
export type MigrationStatus = (typeof MIGRATION_STATUSES)[number];

/** qapi/migration.json `MigrationCapability`. */
export const MIGRATION_CAPABILITIES = [
  "xbzrle",
  "rdma-pin-all",
  "auto-converge",
  "zero-blocks",
  "compress",
  "events",
  "postcopy-ram",
  "x-colo",
  "release-ram",
  "block",
  "return-path",
  "pause-before-switchover",
  "multifd",
  "dirty-bitmaps",
  "postcopy-blocktime",
  "late-block-activate",
  "x-ignore-shared",
  "validate-uuid",
  "background-snapshot",
  "zero-copy-send",
  "postcopy-preempt",
] as const;
export type MigrationCapability = (typeof MIGRATION_CAPABILITIES)[number];

/** Narrows `value` to one of `values`. */
export function isOneOf<T extends string>(values: readonly T[], value: unknown): value is T {
  return typeof value === "string" && (values as readonly string[]).includes(value);
}
