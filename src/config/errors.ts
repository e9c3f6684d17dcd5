/**
 * The one error type of src/config: every failure names the file, the line
 * (when there is one) and what is wrong, in the compiler style
 *   guest.cfg:12: memory: expected a whole number of MiB, got "12x"
 */

import type { SourceLocation } from "./types.js";

/** Machine-readable reason, stable for callers and tests. */
export type ConfigErrorCode =
  /** The file could not be read. */
  | "io"
  /** Malformed line: unexpected token, missing `=`, bad escape, ... */
  | "syntax"
  /** A quoted string that does not end on its line. */
  | "unterminated-string"
  /** A `[` with no matching `]`. */
  | "unterminated-list"
  /** A key (or disk/vif spec key) this toolstack does not know. */
  | "unknown-key"
  /** A key xl knows that this toolstack deliberately does not support. */
  | "unsupported-key"
  /** The same key set twice. */
  | "duplicate-key"
  /** A required key is absent. */
  | "missing-key"
  /** Two keys that exclude each other (extra and cmdline; COLO keys without colo). */
  | "conflicting-keys"
  /** A value of the wrong type or shape, or out of range. */
  | "bad-value"
  /** A well-formed value this toolstack does not support (yet). */
  | "unsupported-value"
  /** More disks or vifs than the machine has slots for. */
  | "too-many";

export class ConfigError extends Error {
  override readonly name = "ConfigError";
  readonly code: ConfigErrorCode;
  /** The config file, as the caller named it. */
  readonly file: string;
  /** 1-based line, or undefined when the error concerns the whole file (missing key, unreadable). */
  readonly line: number | undefined;
  /** The key concerned (`memory`, `disk[0]`, ...), when there is one. */
  readonly key: string | undefined;
  /** The other place involved (first definition of a duplicate key, the other of two conflicting keys). */
  readonly related: SourceLocation | undefined;

  constructor(
    code: ConfigErrorCode,
    file: string,
    line: number | undefined,
    key: string | undefined,
    detail: string,
    related?: SourceLocation,
  ) {
    const where = line === undefined ? file : `${file}:${line}`;
    super(key === undefined ? `${where}: ${detail}` : `${where}: ${key}: ${detail}`);
    this.code = code;
    this.file = file;
    this.line = line;
    this.key = key;
    this.related = related;
  }
}

/** Quote a user-supplied value for an error message (JSON escaping keeps control characters visible). */
export function quote(value: string): string {
  return JSON.stringify(value);
}
