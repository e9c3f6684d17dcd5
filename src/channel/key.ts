import { randomBytes } from "node:crypto";
import { readFileSync, statSync, writeFileSync } from "node:fs";

/** Where `colo` looks for the shared key when no --key-file is given. */
export const DEFAULT_KEY_FILE = "/etc/colo/colo.key";

/** Key length in bytes: AES-256's key size; a PSK shorter than this is refused. */
export const KEY_BYTES = 32;

export class KeyError extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(message);
    this.name = "KeyError";
  }
}

/**
 * Reads a key file: one line of hex, at least KEY_BYTES bytes. Like ssh, a
 * file others can read is refused: the key is the whole of the channel's
 * security.
 */
export function loadKey(path: string): Buffer {
  let mode: number;
  let text: string;
  try {
    mode = statSync(path).mode;
    text = readFileSync(path, "utf8");
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new KeyError(path, `cannot read key file ${path}: ${e.code ?? e.message} (make one on one host with "colo keygen ${path}" and copy it to the other)`);
  }
  if ((mode & 0o077) !== 0) {
    throw new KeyError(path, `key file ${path} is readable by others (mode ${(mode & 0o777).toString(8)}): chmod 600 ${path}`);
  }
  const hex = text.trim();
  if (!/^[0-9a-fA-F]+$/.test(hex) || hex.length % 2 !== 0) {
    throw new KeyError(path, `key file ${path}: expected one line of hex digits`);
  }
  const key = Buffer.from(hex, "hex");
  if (key.length < KEY_BYTES) {
    throw new KeyError(path, `key file ${path}: key is ${key.length} bytes, need at least ${KEY_BYTES}`);
  }
  return key;
}

/** Writes a new random key (mode 0600); refuses to overwrite unless asked. */
export function generateKeyFile(path: string, overwrite = false): void {
  try {
    writeFileSync(path, randomBytes(KEY_BYTES).toString("hex") + "\n", { mode: 0o600, flag: overwrite ? "w" : "wx" });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === "EEXIST") throw new KeyError(path, `key file ${path} exists (use --force to replace it)`);
    throw new KeyError(path, `cannot write key file ${path}: ${e.code ?? e.message}`);
  }
}
