/** What disk.ts and vif.ts need to know about the list item they parse. */

import { resolve } from "node:path";
import { ConfigError, type ConfigErrorCode } from "./errors.js";

export interface SpecContext {
  /** The config file as named in error messages. */
  file: string;
  /** The line of the list item. */
  line: number;
  /** How errors name the item: "disk[0]", "vif[0]". */
  key: string;
  /** The config file's folder (absolute): relative paths resolve against it. */
  baseDir: string;
}

export function specError(ctx: SpecContext, code: ConfigErrorCode, detail: string): ConfigError {
  return new ConfigError(code, ctx.file, ctx.line, ctx.key, detail);
}

export function resolvePath(ctx: SpecContext, path: string): string {
  return resolve(ctx.baseDir, path);
}

/** Linux's rule for interface names (net/core/dev.c dev_valid_name; IFNAMSIZ 16 with the NUL). */
export function validInterfaceName(name: string): boolean {
  const IFNAMSIZ = 16;
  if (name.length === 0 || name.length >= IFNAMSIZ) return false;
  if (name === "." || name === "..") return false;
  return !/[\s/:]/.test(name) && !/[\x00-\x1f\x7f]/.test(name);
}

/** Dotted-quad IPv4 without leading zeros, e.g. "10.77.0.10". */
export function validIPv4(text: string): boolean {
  const parts = text.split(".");
  return parts.length === 4 && parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255);
}
