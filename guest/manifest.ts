/**
 * The manifest stored next to the cached image (`<cacheDir>/manifest.json`):
 * everything the image is made from. The builder computes it before doing
 * any work and rebuilds only when it differs from the stored one.
 */

/**
 * Bump when the builder's output changes for the same inputs (initrd
 * layout, file placement, kernel handling). init.sh and the module sets are
 * hashed into `inputs`, so editing them needs no bump.
 */
export const BUILDER_FORMAT = 2;

export interface GuestManifest {
  /** BUILDER_FORMAT of the builder that wrote it. */
  format: number;
  /** Debian architecture of the guest packages. */
  arch: string;
  /** `uname -r` of the guest kernel. */
  kernelRelease: string;
  /** Debian package name → exact version, for every package the image is made from. */
  packages: Record<string, string>;
  /** Other inputs → SHA256 (init script, module sets). */
  inputs: Record<string, string>;
}

function sortedRecord(r: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(r).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** Canonical text: fixed key order, sorted maps, so equal manifests are equal strings. */
export function manifestText(m: GuestManifest): string {
  const canonical: GuestManifest = {
    format: m.format,
    arch: m.arch,
    kernelRelease: m.kernelRelease,
    packages: sortedRecord(m.packages),
    inputs: sortedRecord(m.inputs),
  };
  return `${JSON.stringify(canonical, null, 2)}\n`;
}

function isStringRecord(v: unknown): v is Record<string, string> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === "string");
}

/** Parses a stored manifest; undefined when it is not one (then the image is rebuilt). */
export function parseManifest(text: string): GuestManifest | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof v !== "object" || v === null) return undefined;
  const o = v as Record<string, unknown>;
  if (typeof o.format !== "number" || typeof o.arch !== "string" || typeof o.kernelRelease !== "string") return undefined;
  if (!isStringRecord(o.packages) || !isStringRecord(o.inputs)) return undefined;
  return { format: o.format, arch: o.arch, kernelRelease: o.kernelRelease, packages: o.packages, inputs: o.inputs };
}

export function sameManifest(a: GuestManifest, b: GuestManifest): boolean {
  return manifestText(a) === manifestText(b);
}

/** Human-readable differences, for the build log ("redis-tools 5:7.0.15-1~deb12u6 → 5:7.0.15-1~deb12u7"). */
export function manifestChanges(old: GuestManifest, now: GuestManifest): string[] {
  const out: string[] = [];
  if (old.format !== now.format) out.push(`builder format ${old.format} → ${now.format}`);
  if (old.arch !== now.arch) out.push(`arch ${old.arch} → ${now.arch}`);
  if (old.kernelRelease !== now.kernelRelease) out.push(`kernel ${old.kernelRelease} → ${now.kernelRelease}`);
  for (const [kind, a, b] of [
    ["", old.packages, now.packages],
    ["input ", old.inputs, now.inputs],
  ] as const) {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      const x = a[k];
      const y = b[k];
      if (x !== y) out.push(`${kind}${k} ${x ?? "(none)"} → ${y ?? "(none)"}`);
    }
  }
  return out;
}
