/** Commander argument parsers shared by the verbs (one place, so every verb says the same about a bad number). */
import { InvalidArgumentError } from "commander";
import { ArbiterAddressError, formatArbiterAddress, parseArbiterAddress } from "../api/arbiter-address.js";

export function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`expected a positive whole number, got "${value}"`);
  return n;
}

export function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`expected a whole number >= 0, got "${value}"`);
  return n;
}

/** `--arbiter`: the built-in arbiter's HOST[:PORT] or etcd://HOST:PORT[,HOST:PORT...], in its canonical form. */
export function arbiterAddress(value: string): string {
  try {
    return formatArbiterAddress(parseArbiterAddress(value));
  } catch (err) {
    throw new InvalidArgumentError(err instanceof ArbiterAddressError ? err.reason : (err as Error).message);
  }
}

/** The options of `keys` given on the command line, as their flags (`checkpointMinGap` → `--checkpoint-min-gap`), for "not with ..." errors. */
export function givenFlags(cmd: { getOptionValueSource(key: string): string | undefined }, keys: readonly string[]): string[] {
  return keys.filter((k) => cmd.getOptionValueSource(k) === "cli").map((k) => "--" + k.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase()));
}
