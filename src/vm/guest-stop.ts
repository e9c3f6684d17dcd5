/**
 * How a guest stopped, in the terms of the config keys that say what follows
 * (xl.cfg(5): on_poweroff, on_reboot, on_crash): the engine's events
 * (src/engine's EngineEvent) as the VM layer reports them.
 */
import type { LifecycleAction, VmConfig } from "../config/index.js";
import type { EngineEvent } from "../engine/engine.js";

/** poweroff: the guest halted or powered off; reboot: it asked for a reset; crash: the engine failed. */
export type GuestStopKind = "poweroff" | "reboot" | "crash";

export interface GuestStop {
  kind: GuestStopKind;
  /** When the VM layer heard of it (ms since the epoch: wall clock, an instant for the operator, never timed against). */
  at: number;
  /** What failed (crash only). */
  message?: string;
}

/** The config key that decides what follows a stop of this kind. */
export const LIFECYCLE_KEY: Readonly<Record<GuestStopKind, "on_poweroff" | "on_reboot" | "on_crash">> = {
  poweroff: "on_poweroff",
  reboot: "on_reboot",
  crash: "on_crash",
};

export function guestStopOf(event: EngineEvent, at: number): GuestStop {
  switch (event.kind) {
    case "poweroff":
      return { kind: "poweroff", at };
    case "reboot":
      return { kind: "reboot", at };
    case "fault":
      return { kind: "crash", at, message: event.message };
  }
}

/** The config's action for a stop of this kind (on_poweroff, on_reboot or on_crash). */
export function lifecycleActionOf(config: VmConfig, kind: GuestStopKind): LifecycleAction {
  switch (kind) {
    case "poweroff":
      return config.onPoweroff;
    case "reboot":
      return config.onReboot;
    case "crash":
      return config.onCrash;
  }
}
