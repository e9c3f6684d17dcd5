/**
 * The lab's topology (DESIGN.md §6, docs/lab.md): names and addresses,
 * derived from a prefix so a test lab never collides with a developer's.
 *
 *   <p>-client  eth0 10.77.0.2/24 ──┐
 *                                   │ veth
 *   <p>-lan     lanbr (bridge): p-client, p-h1, p-h2
 *                                   │ veth           │ veth
 *   <p>-h1      colobr: uplink      │  <p>-h2      colobr: uplink
 *               repl0 10.77.1.1/24 ─┴─ veth ─────── repl0 10.77.1.2/24
 *
 * Interface names are fixed and short (each namespace has its own), so only
 * namespace names carry the prefix.
 */

export const DEFAULT_LAB_PREFIX = "colo";

export interface LabTopology {
  prefix: string;
  /** Network namespace names. */
  namespaces: { lan: string; client: string; h1: string; h2: string };
  /** The two "hosts" (namespace names), primary first by convention. */
  hosts: readonly [string, string];
  /** The LAN's bridge, in the lan namespace. */
  lanBridge: string;
  /** The bridge in each host namespace; a TAP enslaved to it is on the LAN. */
  hostBridge: string;
  /** In each host namespace: the veth port of hostBridge whose peer is a port of lanBridge. */
  hostUplink: string;
  /** Ports of lanBridge in the lan namespace, by the namespace at their other end. */
  lanPorts: { client: string; h1: string; h2: string };
  /** The client's interface, in the client namespace. */
  clientIf: string;
  /** The replication link's interface name, in each host namespace. */
  replIf: string;
  lanSubnet: string;
  lanPrefixLen: number;
  clientIp: string;
  /** The guest's address on the LAN (set up by the guest, not by the lab). */
  guestIp: string;
  replSubnet: string;
  replPrefixLen: number;
  /** Replication addresses by host namespace position: replIps[0] on hosts[0]. */
  replIps: readonly [string, string];
  /** Each host's own address on the LAN (on its bridge): the path to the arbiter that is not the replication link. */
  hostLanIps: readonly [string, string];
  /** The arbiter's address (on the LAN bridge, in the lan namespace): `colo arbiter` listens there. */
  arbiterIp: string;
}

const PREFIX_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/;

export function validateLabPrefix(prefix: string): void {
  if (!PREFIX_RE.test(prefix)) {
    throw new RangeError(`invalid lab prefix ${JSON.stringify(prefix)}: 1..32 of A-Z a-z 0-9 _ -, starting with a letter or digit`);
  }
}

export function labTopology(prefix: string = DEFAULT_LAB_PREFIX): LabTopology {
  validateLabPrefix(prefix);
  const namespaces = {
    lan: `${prefix}-lan`,
    client: `${prefix}-client`,
    h1: `${prefix}-h1`,
    h2: `${prefix}-h2`,
  };
  return Object.freeze({
    prefix,
    namespaces: Object.freeze(namespaces),
    hosts: Object.freeze([namespaces.h1, namespaces.h2] as const),
    lanBridge: "lanbr",
    hostBridge: "colobr",
    hostUplink: "uplink",
    lanPorts: Object.freeze({ client: "p-client", h1: "p-h1", h2: "p-h2" }),
    clientIf: "eth0",
    replIf: "repl0",
    lanSubnet: "10.77.0.0/24",
    lanPrefixLen: 24,
    clientIp: "10.77.0.2",
    guestIp: "10.77.0.10",
    replSubnet: "10.77.1.0/24",
    replPrefixLen: 24,
    replIps: Object.freeze(["10.77.1.1", "10.77.1.2"] as const),
    hostLanIps: Object.freeze(["10.77.0.3", "10.77.0.4"] as const),
    arbiterIp: "10.77.0.1",
  });
}

/** The default lab (prefix "colo"). */
export const LAB: LabTopology = labTopology();
