/**
 * The engines this build has: the one list of `engine=` names. The loader
 * refuses every other name (file:line), and src/vm's engine factory has to
 * name a constructor for each (its `Record<EngineName, ...>` does not
 * compile otherwise). Adding an engine = its name here + its factory there.
 */
export const ENGINE_NAMES = ["emu", "qemu"] as const;

/** `engine=`: what executes the guest. */
export type EngineName = (typeof ENGINE_NAMES)[number];

/** The engine of a config that names none. */
export const DEFAULT_ENGINE: EngineName = "emu";

export function isEngineName(name: string): name is EngineName {
  return (ENGINE_NAMES as readonly string[]).includes(name);
}

/** `accel=` (engine qemu): how QEMU runs the guest's instructions; auto = KVM where it is hardware virtualization, else TCG. */
export const ACCEL_NAMES = ["auto", "kvm", "tcg"] as const;
export type AccelName = (typeof ACCEL_NAMES)[number];
