/**
 * The engines this build has: the one list of `engine=` names. The loader
 * refuses every other name (file:line), and src/vm's engine factory has to
 * name a constructor for each (its `Record<EngineName, ...>` does not
 * compile otherwise). Adding an engine = its name here + its factory there.
 */
export const ENGINE_NAMES = ["emu"] as const;

/** `engine=`: what executes the guest. */
export type EngineName = (typeof ENGINE_NAMES)[number];

/** The engine of a config that names none. */
export const DEFAULT_ENGINE: EngineName = "emu";

export function isEngineName(name: string): name is EngineName {
  return (ENGINE_NAMES as readonly string[]).includes(name);
}
