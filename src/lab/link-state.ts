/**
 * What `ip` reports about namespaces and links, parsed from its JSON output
 * (`ip -j netns list`, `ip -n NS -j -d addr show`).
 */
import { runIp } from "./ip-command.js";

export interface LinkState {
  name: string;
  ifindex: number;
  /** "loopback", "bridge", "veth", "tun", ... ("" when ip reports no kind). */
  kind: string;
  /** Administratively up (IFF_UP). */
  up: boolean;
  /** Operationally up (RFC 2863 operstate "UP"): carrier, and for a bridge a forwarding port. */
  operUp: boolean;
  master: string | undefined;
  /** For a veth: the peer's ifindex (in its own namespace). */
  peerIndex: number | undefined;
  /** IPv4 addresses as "a.b.c.d/len". */
  addrs: string[];
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function parseJsonArray(text: string, what: string): unknown[] {
  if (text.trim() === "") return [];
  const v: unknown = JSON.parse(text);
  if (!Array.isArray(v)) throw new Error(`lab: unexpected output of ${what}: not a JSON array`);
  return v;
}

/** Names of all named network namespaces. */
export async function listNetns(): Promise<Set<string>> {
  const list = parseJsonArray(await runIp(["-j", "netns", "list"]), "ip -j netns list");
  const names = new Set<string>();
  for (const e of list) if (isRecord(e) && typeof e.name === "string") names.add(e.name);
  return names;
}

/** The links of namespace `netns` by name. */
export async function linksIn(netns: string): Promise<Map<string, LinkState>> {
  const list = parseJsonArray(await runIp(["-n", netns, "-j", "-d", "addr", "show"]), `ip -n ${netns} -j -d addr show`);
  const links = new Map<string, LinkState>();
  for (const e of list) {
    if (!isRecord(e) || typeof e.ifname !== "string" || typeof e.ifindex !== "number") continue;
    const flags = Array.isArray(e.flags) ? e.flags : [];
    const info = isRecord(e.linkinfo) ? e.linkinfo : {};
    const kind = typeof info.info_kind === "string" ? info.info_kind : e.link_type === "loopback" ? "loopback" : "";
    const addrs: string[] = [];
    if (Array.isArray(e.addr_info)) {
      for (const a of e.addr_info) {
        if (isRecord(a) && a.family === "inet" && typeof a.local === "string" && typeof a.prefixlen === "number") {
          addrs.push(`${a.local}/${a.prefixlen}`);
        }
      }
    }
    links.set(e.ifname, {
      name: e.ifname,
      ifindex: e.ifindex,
      kind,
      up: flags.includes("UP"),
      operUp: e.operstate === "UP",
      master: typeof e.master === "string" ? e.master : undefined,
      peerIndex: typeof e.link_index === "number" ? e.link_index : undefined,
      addrs,
    });
  }
  return links;
}
