/**
 * The kernel command line the VM layer boots with. The guest's init takes its
 * address from `colo.ip=`; when the config's cmdline does not set it and the
 * vif has ip=, it is added from there, so the address is written once.
 */

import type { VmConfig } from "./types.js";

/** Matches a `colo.ip=` parameter (a whole word of the command line). */
const COLO_IP_PARAM = /(^|\s)colo\.ip=/;

export function guestCmdline(config: Pick<VmConfig, "cmdline" | "vifs">): string {
  const cmdline = config.cmdline.trim();
  const ip = config.vifs[0]?.ip;
  if (ip === undefined || COLO_IP_PARAM.test(cmdline)) return cmdline;
  return cmdline === "" ? `colo.ip=${ip}` : `${cmdline} colo.ip=${ip}`;
}
