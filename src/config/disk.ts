/**
 * One disk spec string of `disk = [ ... ]`, after xl-disk-configuration(5):
 *
 *   format=raw, vdev=hda, access=rw, target=../images/guest.img
 *   ../images/guest.img,raw,hda,rw                      (positional)
 *   colo, colo-host=10.0.0.2, colo-port=9000, colo-export=guest-hda,
 *     active-disk=active.img, hidden-disk=hidden.img, format=raw, vdev=hda, target=guest.img
 *
 * Items are separated by ",". An item with "=" is a named parameter; a bare
 * keyword is a flag (only `colo` is supported); any other item fills the next
 * positional parameter not yet given (target, format, vdev, access), an empty
 * item leaving that one at its default. `target=` consumes the rest of the
 * string, commas and trailing blanks included, so it must come last.
 */

import type { ColoDiskOptions, DiskConfig, IdeVdev } from "./types.js";
import { isIP } from "node:net";
import { quote } from "./errors.js";
import { didYouMean } from "./suggest.js";
import { resolvePath, specError, type SpecContext } from "./spec.js";

const TARGET_PREFIX = "target=";

const POSITIONAL = ["target", "format", "vdev", "access"] as const;
type Positional = (typeof POSITIONAL)[number];

const COLO_KEYS = ["colo-host", "colo-port", "colo-export", "active-disk", "hidden-disk"] as const;
type ColoKey = (typeof COLO_KEYS)[number];

const NAMED_KEYS: readonly string[] = ["format", "vdev", "access", ...COLO_KEYS];
/** Every key a user may type: named keys, target and the flag, for "did you mean". */
const ALL_KEYS: readonly string[] = [...NAMED_KEYS, "target", "colo"];

/** xl-disk-configuration(5) keys and flags we do not support, with why. */
const UNSUPPORTED: Readonly<Record<string, string>> = {
  devtype: "only hard disks are supported (no cdrom)",
  cdrom: "only hard disks are supported (no cdrom)",
  backend: "there are no driver domains; the colo process serves every disk itself",
  backendtype: "the colo process serves every disk itself",
  script: "block scripts are not supported; give the image file as target=",
  "direct-io-safe": "not supported",
  discard: "not supported (v86's IDE has no TRIM)",
  "no-discard": "not supported (v86's IDE has no TRIM)",
  trusted: "not supported",
  untrusted: "not supported",
  specification: "not supported",
};

/** xl's deprecated `<format>:<target>` forms (xl-disk-configuration(5), "deprecated"). */
const DEPRECATED_PREFIX = /^(phy|file|tap|tap2|aio|raw|qcow|qcow2|vhd|qed):/;

/** In slot order: primary master, primary slave, secondary master, secondary slave. */
export const IDE_VDEVS: readonly IdeVdev[] = ["hda", "hdb", "hdc", "hdd"];

function isIdeVdev(text: string): text is IdeVdev {
  return (IDE_VDEVS as readonly string[]).includes(text);
}

function isColoKey(key: string): key is ColoKey {
  return (COLO_KEYS as readonly string[]).includes(key);
}

/** The raw pieces of a spec, before validation. */
interface DiskItems {
  positional: Partial<Record<Positional, string>>;
  colo: Partial<Record<ColoKey, string>>;
  coloFlag: boolean;
  /** True when target came as target=..., false when positional. */
  targetNamed: boolean;
}

function splitSpec(spec: string, ctx: SpecContext): DiskItems {
  const items: DiskItems = { positional: {}, colo: {}, coloFlag: false, targetNamed: false };
  /** Positional slots already taken, by name or by position (an empty item takes one too). */
  const taken = new Set<Positional>();
  let rest = spec;
  for (;;) {
    const trimmedStart = rest.replace(/^\s+/, "");
    if (trimmedStart.startsWith(TARGET_PREFIX)) {
      if (taken.has("target")) throw specError(ctx, "bad-value", "target: given twice");
      items.positional.target = trimmedStart.slice(TARGET_PREFIX.length);
      items.targetNamed = true;
      return items;
    }
    const comma = rest.indexOf(",");
    const item = (comma < 0 ? rest : rest.slice(0, comma)).trim();
    rest = comma < 0 ? "" : rest.slice(comma + 1);
    const equals = item.indexOf("=");
    if (equals >= 0) {
      const key = item.slice(0, equals).trim();
      const value = item.slice(equals + 1).trim();
      const why = UNSUPPORTED[key];
      if (why !== undefined) throw specError(ctx, "unsupported-key", `${key}: ${why}`);
      if (key === "format" || key === "vdev" || key === "access") {
        if (taken.has(key)) throw specError(ctx, "bad-value", `${key}: given twice`);
        taken.add(key);
        items.positional[key] = value;
      } else if (isColoKey(key)) {
        if (items.colo[key] !== undefined) throw specError(ctx, "bad-value", `${key}: given twice`);
        items.colo[key] = value;
      } else {
        throw specError(ctx, "unknown-key", `unknown disk key ${quote(key)}${didYouMean(key, ALL_KEYS)}`);
      }
    } else if (item === "colo") {
      if (items.coloFlag) throw specError(ctx, "bad-value", "colo: given twice");
      items.coloFlag = true;
    } else if (UNSUPPORTED[item] !== undefined) {
      throw specError(ctx, "unsupported-key", `${item}: ${UNSUPPORTED[item]}`);
    } else {
      const slot = POSITIONAL.find((p) => !taken.has(p));
      if (slot === undefined) {
        if (item !== "") {
          throw specError(ctx, "bad-value", `unexpected ${quote(item)}: all positional parameters (target, format, vdev, access) are given`);
        }
      } else {
        taken.add(slot);
        if (item !== "") items.positional[slot] = item;
      }
    }
    if (comma < 0) return items;
  }
}

function parseColo(items: DiskItems, target: string, ctx: SpecContext): ColoDiskOptions | undefined {
  if (!items.coloFlag) {
    const stray = COLO_KEYS.find((k) => items.colo[k] !== undefined);
    if (stray !== undefined) {
      throw specError(ctx, "conflicting-keys", `${stray}: only valid on a COLO disk (add the "colo" flag)`);
    }
    return undefined;
  }
  const need = (key: ColoKey): string => {
    const value = items.colo[key];
    if (value === undefined) throw specError(ctx, "missing-key", `colo: ${key}= is required on a COLO disk`);
    if (value === "") throw specError(ctx, "bad-value", `${key}: empty`);
    return value;
  };
  const host = need("colo-host");
  const hostname = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;
  if (isIP(host) === 0 && !hostname.test(host)) {
    throw specError(ctx, "bad-value", `colo-host: expected an IP address or host name, got ${quote(host)}`);
  }
  const portText = need("colo-port");
  const port = /^[0-9]{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 1 && port <= 65535)) {
    throw specError(ctx, "bad-value", `colo-port: expected a port number 1..65535, got ${quote(portText)}`);
  }
  const exportName = need("colo-export");
  // NBD limits export names to 4096 bytes (NBD protocol, NBD_OPT_EXPORT_NAME).
  if (/[\s\x00-\x1f\x7f]/.test(exportName) || Buffer.byteLength(exportName) > 4096) {
    throw specError(ctx, "bad-value", `colo-export: expected a name without blanks or control characters, got ${quote(exportName)}`);
  }
  const activeDisk = resolvePath(ctx, need("active-disk"));
  const hiddenDisk = resolvePath(ctx, need("hidden-disk"));
  if (activeDisk === hiddenDisk) throw specError(ctx, "bad-value", "active-disk and hidden-disk: must be different files");
  if (activeDisk === target) throw specError(ctx, "bad-value", "active-disk: must not be the target image");
  if (hiddenDisk === target) throw specError(ctx, "bad-value", "hidden-disk: must not be the target image");
  return { host, port, exportName, activeDisk, hiddenDisk };
}

/** Parses and validates one disk spec. Throws ConfigError naming ctx.key (e.g. "disk[0]"). */
export function parseDiskSpec(spec: string, ctx: SpecContext): DiskConfig {
  const items = splitSpec(spec, ctx);
  const { positional } = items;
  // Before the other checks: in the deprecated form the other positionals shift too ("raw:/d.img,hda,w").
  const positionalTarget = items.targetNamed ? undefined : positional.target;
  if (positionalTarget !== undefined && DEPRECATED_PREFIX.test(positionalTarget)) {
    throw specError(
      ctx,
      "unsupported-value",
      `target: the deprecated "format:path" form is not supported (got ${quote(positionalTarget)}); write format=raw, vdev=..., target=PATH`,
    );
  }

  const format = positional.format ?? "raw";
  if (format !== "raw") throw specError(ctx, "unsupported-value", `format: only raw is supported (got ${quote(format)})`);

  const vdev = positional.vdev;
  if (vdev === undefined) throw specError(ctx, "missing-key", "vdev: missing (e.g. vdev=hda)");
  if (!isIdeVdev(vdev)) {
    throw specError(ctx, "unsupported-value", `vdev: only IDE disks hda, hdb, hdc and hdd are supported (got ${quote(vdev)})`);
  }

  const accessText = positional.access ?? "rw";
  let access: "rw" | "ro";
  if (accessText === "rw" || accessText === "w") access = "rw";
  else if (accessText === "ro" || accessText === "r") access = "ro";
  else throw specError(ctx, "bad-value", `access: expected rw or ro (or w, r), got ${quote(accessText)}`);

  const targetText = positional.target;
  if (targetText === undefined) throw specError(ctx, "missing-key", "target: missing (end the spec with target=PATH)");
  if (targetText.trim() === "") throw specError(ctx, "bad-value", "target: empty");
  const target = resolvePath(ctx, targetText);

  const colo = parseColo(items, target, ctx);
  const disk: DiskConfig = { target, format: "raw", vdev, access, at: { file: ctx.file, line: ctx.line } };
  if (colo !== undefined) disk.colo = colo;
  return disk;
}
