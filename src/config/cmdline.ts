/**
 * The kernel command line the VM layer boots with. The guest's init
 * (guest/init.sh) takes its network settings and host name from `colo.ip=`,
 * `colo.gw=` and `colo.hostname=`; each one the config's cmdline does not set
 * is added from the first vif (`ip=`, `gatewayip=`) or the VM's name, so
 * every value is written once.
 */

import type { VmConfig } from "./types.js";

function hasParam(cmdline: string, key: string): boolean {
  return cmdline.split(/\s+/).some((word) => word.startsWith(`${key}=`));
}

export function guestCmdline(config: Pick<VmConfig, "cmdline" | "vifs"> & { name?: string }): string {
  const cmdline = config.cmdline.trim();
  const added: string[] = [];
  const vif = config.vifs[0];
  if (vif?.ip !== undefined && !hasParam(cmdline, "colo.ip")) added.push(`colo.ip=${vif.ip}`);
  if (vif?.gateway !== undefined && !hasParam(cmdline, "colo.gw")) added.push(`colo.gw=${vif.gateway}`);
  if (config.name !== undefined && !hasParam(cmdline, "colo.hostname")) added.push(`colo.hostname=${config.name}`);
  return [cmdline, ...added].filter((p) => p !== "").join(" ");
}
