import { createHash } from "node:crypto";

/** Linux IFNAMSIZ is 16 including the NUL (linux/if.h). */
const IFNAME_MAX = 15;

/**
 * The host TAP device name for a VM's NIC: `cv-<name>` when it fits, else
 * `cv-<prefix>-<hash>` so two long VM names never collide. (Xen's `vifD.N`
 * needs a domain id; we have names.)
 */
export function tapNameFor(vmName: string, index = 0): string {
  const suffix = index === 0 ? "" : `.${index}`;
  const plain = `cv-${vmName}${suffix}`;
  if (plain.length <= IFNAME_MAX && /^[A-Za-z0-9_.-]+$/.test(vmName)) return plain;
  const hash = createHash("sha256").update(vmName).digest("hex").slice(0, 4);
  const room = IFNAME_MAX - "cv-".length - 1 - hash.length - suffix.length;
  const prefix = vmName.replace(/[^A-Za-z0-9_-]/g, "").slice(0, Math.max(0, room));
  return `cv-${prefix}-${hash}${suffix}`;
}
