/**
 * Split brain as the LAN sees it (issue 13): which host sent frames with
 * the guest's MAC. Named nftables counters in the lab's LAN namespace, in
 * the bridge family's prerouting hook, count every frame with the guest's
 * source MAC that enters the LAN bridge from each host's port (p-h1,
 * p-h2). A protected guest's frames reach the LAN from the primary's host
 * only (the secondary's output goes to the primary's comparator over the
 * replication link); after a fault they must come from exactly one host.
 *
 * Frames only: what the guest sent, counted in the kernel, independent of
 * what the daemons say about themselves.
 */
import type { LabTopology } from "../../src/lab/topology.js";
import { nft } from "./fault-inject.js";

const TABLE = "colo_wire";

export interface WireCounts {
  h1: number;
  h2: number;
}

export class WireWatch {
  private constructor(
    private readonly lab: LabTopology,
    private readonly mac: string,
  ) {}

  /** Installs the counters (replacing an earlier watch's table). */
  static async start(lab: LabTopology, mac: string): Promise<WireWatch> {
    if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(mac)) throw new RangeError(`wire watch: ${JSON.stringify(mac)} is not a MAC address`);
    const w = new WireWatch(lab, mac.toLowerCase());
    await w.nft(["delete", "table", "bridge", TABLE]).catch(() => undefined);
    await w.nft(["add", "table", "bridge", TABLE]);
    await w.nft(["add", "chain", "bridge", TABLE, "pre", "{ type filter hook prerouting priority -200; policy accept; }"]);
    for (const h of ["h1", "h2"] as const) {
      await w.nft(["add", "counter", "bridge", TABLE, h]);
      await w.nft(["add", "rule", "bridge", TABLE, "pre", "iifname", lab.lanPorts[h], "ether", "saddr", w.mac, "counter", "name", h]);
    }
    return w;
  }

  /** Frames with the guest's MAC that each host has sent to the LAN since start(). */
  async read(): Promise<WireCounts> {
    const out = await this.nft(["-j", "list", "counters", "table", "bridge", TABLE]);
    return parseCounters(out);
  }

  async stop(): Promise<void> {
    await this.nft(["delete", "table", "bridge", TABLE]).catch(() => undefined);
  }

  private nft(args: string[]): Promise<string> {
    return nft(this.lab.namespaces.lan, args).catch((err: unknown) => {
      throw new Error(`wire watch: ${(err as Error).message}`);
    });
  }
}

/** The packet counts of counters h1 and h2 in `nft -j list counters` output. */
export function parseCounters(json: string): WireCounts {
  const doc = JSON.parse(json) as { nftables?: { counter?: { name?: string; packets?: number } }[] };
  const counts: WireCounts = { h1: -1, h2: -1 };
  for (const item of doc.nftables ?? []) {
    const c = item.counter;
    if (c && (c.name === "h1" || c.name === "h2") && typeof c.packets === "number") counts[c.name] = c.packets;
  }
  if (counts.h1 < 0 || counts.h2 < 0) throw new Error(`wire watch: counters h1 and h2 not in nft's answer: ${json.slice(0, 300)}`);
  return counts;
}

/** Frames each host sent between two readings. */
export function wireDelta(from: WireCounts, to: WireCounts): WireCounts {
  return { h1: to.h1 - from.h1, h2: to.h2 - from.h2 };
}

/**
 * The wire's verdict on one window: "h1" or "h2" when exactly one host sent
 * the guest's frames, "both" (split brain), or "none".
 */
export function wireSender(d: WireCounts): "h1" | "h2" | "both" | "none" {
  if (d.h1 > 0 && d.h2 > 0) return "both";
  if (d.h1 > 0) return "h1";
  if (d.h2 > 0) return "h2";
  return "none";
}
