/**
 * The one place that turns a config's `engine=` name into an engine object:
 * nothing above src/vm names a concrete engine class. The table is keyed by
 * every name of src/config/engines.ts (ENGINE_NAMES), so an engine added
 * there does not compile until it has a constructor here.
 */
import type { AccelName, EngineName, NicModel } from "../config/index.js";
import type { Engine, MachineSpec } from "../engine/engine.js";
import { EmuEngine } from "../engine/emu/emu-engine.js";
import { EngineError } from "../engine/errors.js";
import { QemuEngine } from "../engine/qemu/qemu-engine.js";

/** What the VM layer gives every engine besides the machine spec. */
export interface EngineSettings {
  /** The NIC model the guest sees (the vif's `model=`). */
  nicModel?: NicModel;
  /** A BIOS image instead of the engine's default (tests). */
  biosPath?: string;
  /** The VM's name (qemu: process title, messages). */
  vmName?: string;
  /** `accel=` (qemu). */
  accel?: AccelName;
  /** Problems an engine reports without stopping the VM. */
  log?: (line: string) => void;
}

/**
 * COLO_DIRTY_LOG, for both engines: unset or "auto", the kernel's write
 * log of guest RAM when it has one; "shadow-compare", always the compare
 * (docs/engines.md). Anything else is refused, naming the variable.
 */
function dirtyLogChoice(engine: EngineName): "auto" | "shadow-compare" {
  const v = process.env.COLO_DIRTY_LOG;
  if (v === undefined || v === "" || v === "auto") return "auto";
  if (v === "shadow-compare") return v;
  throw new EngineError(engine, "BAD_SPEC", `COLO_DIRTY_LOG=${JSON.stringify(v)}: expected "auto" or "shadow-compare"`);
}

/** Builds an engine (not started) for one machine. */
export type EngineFactory = (spec: MachineSpec, settings: EngineSettings) => Engine;

const ENGINE_FACTORIES: Readonly<Record<EngineName, EngineFactory>> = {
  emu: (spec, settings) =>
    new EmuEngine(spec, {
      ...(settings.biosPath !== undefined ? { biosPath: settings.biosPath } : {}),
      ...(settings.nicModel !== undefined ? { nicModel: settings.nicModel } : {}),
      dirtyLog: dirtyLogChoice("emu"),
    }),
  qemu: (spec, settings) => {
    if (settings.nicModel !== undefined && settings.nicModel !== "virtio") {
      throw new EngineError("qemu", "BAD_SPEC", `the qemu engine's NIC is virtio-net; vif model=${settings.nicModel} is emu's`);
    }
    if (settings.biosPath !== undefined) throw new EngineError("qemu", "BAD_SPEC", "the qemu engine boots the kernel directly (no BIOS image to give)");
    return new QemuEngine(spec, {
      ...(settings.vmName !== undefined ? { vm: settings.vmName } : {}),
      ...(settings.accel !== undefined ? { accel: settings.accel } : {}),
      ...(settings.log !== undefined ? { log: settings.log } : {}),
      dirtyLog: dirtyLogChoice("qemu"),
    });
  },
};

/** The engine factory of a config's engine name. */
export function engineFactory(name: EngineName): EngineFactory {
  return ENGINE_FACTORIES[name];
}
