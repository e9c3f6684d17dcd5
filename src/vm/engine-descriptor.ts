/**
 * The Engine.compatibility an engine of this host would have for a
 * config's `engine=`, found without building or starting a machine (no VM
 * boots): emu's is v86's version and the state format, known to this
 * process; qemu's is the installed QEMU's version (`--version`, as the QMP
 * greeting would give it) and the machine type. `colo check` compares it,
 * on the secondary, with the primary's running engine's. Like
 * engine-factory.ts, the table names every engine of ENGINE_NAMES.
 */
import type { EngineName } from "../config/index.js";
import type { EngineId } from "../engine/engine.js";
import { emuCompatibilityDescriptor } from "../engine/emu/emu-engine.js";
import { installedQemuVersion, qemuCompatibility } from "../engine/qemu/qemu-version.js";

/** The engine this host would run, or why it cannot say (the engine is not installed or does not answer). */
export type PredictedEngine = { engineId: EngineId; descriptor: string; from: string } | { engineId: EngineId; why: string };

const PREDICTORS: Readonly<Record<EngineName, () => Promise<{ descriptor: string; from: string }>>> = {
  emu: () => Promise.resolve({ descriptor: emuCompatibilityDescriptor(), from: "the v86 package of this colo" }),
  qemu: async () => {
    const q = await installedQemuVersion();
    const v = q.version;
    return { descriptor: qemuCompatibility(`${v.major}.${v.minor}.${v.micro}`), from: `${q.binary} --version${v.package ? ` (${v.package})` : ""}` };
  },
};

/** What an engine named `name` would say as its compatibility on this host; never throws. */
export async function predictEngine(name: EngineName): Promise<PredictedEngine> {
  try {
    return { engineId: name, ...(await PREDICTORS[name]()) };
  } catch (err) {
    return { engineId: name, why: err instanceof Error ? err.message : String(err) };
  }
}
