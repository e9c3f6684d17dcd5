/** src/config's public API: see README.md beside this file. */
export type {
  ColoDiskOptions,
  DiskConfig,
  AccelName,
  EngineName,
  IdeVdev,
  LifecycleAction,
  NicModel,
  SourceLocation,
  VifConfig,
  VmConfig,
} from "./types.js";
export { ACCEL_NAMES, DEFAULT_ENGINE, ENGINE_NAMES, isEngineName } from "./engines.js";
export { ConfigError, type ConfigErrorCode } from "./errors.js";
export { loadVmConfig, parseVmConfig, MEMORY_DEFAULT_MIB, MEMORY_MAX_MIB, MEMORY_MIN_MIB, MAX_DISKS, MAX_VIFS } from "./load.js";
export { guestCmdline } from "./cmdline.js";
export { formatMac, generatedMac } from "./vif.js";
export { parseConfigText, type RawAtom, type RawConfig, type RawEntry, type RawList, type RawValue } from "./parse.js";
