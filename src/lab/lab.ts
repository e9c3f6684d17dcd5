/**
 * The lab: network namespaces standing in for a LAN, a client and two hosts
 * (DESIGN.md §6, docs/lab.md). labUp builds or completes it, labDown
 * removes it, labStatus says what is there. Everything goes through `ip`
 * (iproute2), spawned asynchronously.
 *
 * labUp works from the state `ip` reports: it plans only what is missing
 * or wrong (a missing namespace, link, port, address, a link that is down)
 * and runs that, so on a complete lab it runs no command at all. A veth
 * whose peer is not where it belongs is deleted and made again.
 */
import { IpCommandError, formatIp, runIp } from "./ip-command.js";
import { type LinkState, linksIn, listNetns } from "./link-state.js";
import { DEFAULT_LAB_PREFIX, LAB, type LabTopology, labTopology } from "./topology.js";
import { monotonicMs } from "../sys/clock.js";

export { IpCommandError } from "./ip-command.js";
export { DEFAULT_LAB_PREFIX, LAB, type LabTopology, labTopology, validateLabPrefix } from "./topology.js";

export interface LabOptions {
  /** Prefix of the namespace names; default "colo" (the LAB constant). */
  prefix?: string;
}

export interface LabUpResult {
  prefix: string;
  /** The `ip` commands run, in order; empty when the lab was already complete. */
  commands: string[];
}

export interface LabDownResult {
  prefix: string;
  /** Namespaces deleted (those that existed). */
  removed: string[];
  /**
   * Processes that were still inside a namespace when it was deleted: the
   * name is gone, but the namespace (and its interfaces) lives on until
   * they exit.
   */
  busy: { netns: string; pids: number[] }[];
}

export interface LabStatus {
  prefix: string;
  /** "up": complete; "down": none of its namespaces exists; "partial": anything else. */
  state: "up" | "down" | "partial";
  /** Each lab namespace and whether it exists. */
  namespaces: Record<string, boolean>;
  /** What labUp would fix, one line each; empty when state is "up". */
  problems: string[];
  topology: LabTopology;
}

// ---------------------------------------------------------------------------
// The desired state

interface Endpoint {
  ns: string;
  name: string;
}

interface WantedLink extends Endpoint {
  kind: "loopback" | "bridge" | "veth";
  /** For a veth: the other end. */
  peer?: Endpoint;
  master?: string;
  addrs: string[];
}

function wantedLinks(t: LabTopology): WantedLink[] {
  const { lan, client, h1, h2 } = t.namespaces;
  const links: WantedLink[] = [];
  const lanCidr = (ip: string): string => `${ip}/${t.lanPrefixLen}`;
  for (const ns of [lan, client, h1, h2]) links.push({ ns, name: "lo", kind: "loopback", addrs: [] });
  links.push({ ns: lan, name: t.lanBridge, kind: "bridge", addrs: [lanCidr(t.arbiterIp)] });
  links.push({ ns: h1, name: t.hostBridge, kind: "bridge", addrs: [lanCidr(t.hostLanIps[0])] });
  links.push({ ns: h2, name: t.hostBridge, kind: "bridge", addrs: [lanCidr(t.hostLanIps[1])] });
  const pair = (a: Omit<WantedLink, "kind" | "peer">, b: Omit<WantedLink, "kind" | "peer">): void => {
    links.push({ ...a, kind: "veth", peer: { ns: b.ns, name: b.name } });
    links.push({ ...b, kind: "veth", peer: { ns: a.ns, name: a.name } });
  };
  const replCidr = (ip: string): string => `${ip}/${t.replPrefixLen}`;
  pair({ ns: lan, name: t.lanPorts.client, master: t.lanBridge, addrs: [] }, { ns: client, name: t.clientIf, addrs: [lanCidr(t.clientIp)] });
  pair({ ns: lan, name: t.lanPorts.h1, master: t.lanBridge, addrs: [] }, { ns: h1, name: t.hostUplink, master: t.hostBridge, addrs: [] });
  pair({ ns: lan, name: t.lanPorts.h2, master: t.lanBridge, addrs: [] }, { ns: h2, name: t.hostUplink, master: t.hostBridge, addrs: [] });
  pair({ ns: h1, name: t.replIf, addrs: [replCidr(t.replIps[0])] }, { ns: h2, name: t.replIf, addrs: [replCidr(t.replIps[1])] });
  return links;
}

function labNamespaces(t: LabTopology): string[] {
  const { lan, client, h1, h2 } = t.namespaces;
  return [lan, client, h1, h2];
}

// ---------------------------------------------------------------------------
// Planning: from what is to what should be

interface Step {
  /** What is wrong, for labStatus. */
  problem: string;
  args: string[];
  /** Deleting something that may already be gone with its peer. */
  tolerateMissing?: boolean;
}

type Snapshot = Map<string, Map<string, LinkState>>;

async function snapshot(t: LabTopology): Promise<{ existing: Set<string>; links: Snapshot }> {
  const all = await listNetns();
  const existing = new Set(labNamespaces(t).filter((ns) => all.has(ns)));
  const links: Snapshot = new Map();
  await Promise.all(
    [...existing].map(async (ns) => {
      links.set(ns, await linksIn(ns));
    }),
  );
  return { existing, links };
}

/** The shell lines that turn IPv6 off in a new namespace: the LAN then carries only the IPv4/ARP we cause. */
const QUIET_IPV6 =
  "[ -d /proc/sys/net/ipv6 ] || exit 0; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6 && echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6";

function plan(t: LabTopology, existing: Set<string>, links: Snapshot): Step[] {
  const nsSteps: Step[] = [];
  const deletes: Step[] = [];
  const creates: Step[] = [];
  const masters: Step[] = [];
  const addrs: Step[] = [];
  const ups: Step[] = [];

  for (const ns of labNamespaces(t)) {
    if (existing.has(ns)) continue;
    nsSteps.push({ problem: `namespace ${ns} missing`, args: ["netns", "add", ns] });
    nsSteps.push({ problem: `namespace ${ns}: IPv6 to turn off`, args: ["netns", "exec", ns, "sh", "-c", QUIET_IPV6] });
  }

  const wanted = wantedLinks(t);
  const current = (e: Endpoint): LinkState | undefined => links.get(e.ns)?.get(e.name);
  /** Links (re)made by this plan: fresh, down, no master, no address. */
  const fresh = new Set<string>();
  const key = (e: Endpoint): string => `${e.ns}/${e.name}`;

  for (const w of wanted) {
    const cur = current(w);
    if (w.kind === "loopback") continue;
    if (w.kind === "bridge") {
      if (cur !== undefined && cur.kind === "bridge") continue;
      if (cur !== undefined) {
        deletes.push({ problem: `${w.ns}: ${w.name} is a ${cur.kind || "non-bridge"}, not a bridge`, args: ["-n", w.ns, "link", "del", "dev", w.name], tolerateMissing: true });
      }
      creates.push({ problem: `${w.ns}: bridge ${w.name} missing`, args: ["-n", w.ns, "link", "add", "name", w.name, "type", "bridge"] });
      fresh.add(key(w));
      continue;
    }
    // veth: handle each pair once, from its first end.
    const peer = w.peer;
    if (peer === undefined || key(w) > key(peer)) continue;
    const other = current(peer);
    const paired =
      cur !== undefined && other !== undefined && cur.kind === "veth" && other.kind === "veth" &&
      cur.peerIndex === other.ifindex && other.peerIndex === cur.ifindex;
    if (paired) continue;
    for (const [end, st] of [[w, cur], [peer, other]] as const) {
      if (st !== undefined) {
        deletes.push({ problem: `${end.ns}: ${end.name} is not the veth peer of ${peer === end ? `${w.ns}/${w.name}` : `${peer.ns}/${peer.name}`}`, args: ["-n", end.ns, "link", "del", "dev", end.name], tolerateMissing: true });
      }
    }
    creates.push({
      problem: `veth ${w.ns}/${w.name} <-> ${peer.ns}/${peer.name} missing`,
      args: ["-n", w.ns, "link", "add", "name", w.name, "type", "veth", "peer", "name", peer.name, "netns", peer.ns],
    });
    fresh.add(key(w));
    fresh.add(key(peer));
  }

  for (const w of wanted) {
    const cur = fresh.has(key(w)) ? undefined : current(w);
    if (w.master !== undefined && cur?.master !== w.master) {
      masters.push({ problem: `${w.ns}: ${w.name} not a port of ${w.master}`, args: ["-n", w.ns, "link", "set", "dev", w.name, "master", w.master] });
    }
    for (const a of w.addrs) {
      if (cur?.addrs.includes(a)) continue;
      addrs.push({ problem: `${w.ns}: ${w.name} lacks ${a}`, args: ["-n", w.ns, "addr", "add", a, "dev", w.name] });
    }
    if (cur?.up !== true) ups.push({ problem: `${w.ns}: ${w.name} down`, args: ["-n", w.ns, "link", "set", "dev", w.name, "up"] });
  }
  return [...nsSteps, ...deletes, ...creates, ...masters, ...addrs, ...ups];
}

function topologyOf(opts: LabOptions | undefined): LabTopology {
  const prefix = opts?.prefix ?? DEFAULT_LAB_PREFIX;
  return prefix === LAB.prefix ? LAB : labTopology(prefix);
}

// ---------------------------------------------------------------------------
// The verbs

/** What exists of the lab and what labUp would fix. Changes nothing. */
export async function labStatus(opts?: LabOptions): Promise<LabStatus> {
  const t = topologyOf(opts);
  const { existing, links } = await snapshot(t);
  const problems = plan(t, existing, links).map((s) => s.problem);
  const namespaces: Record<string, boolean> = {};
  for (const ns of labNamespaces(t)) namespaces[ns] = existing.has(ns);
  const state = problems.length === 0 ? "up" : existing.size === 0 ? "down" : "partial";
  return { prefix: t.prefix, state, namespaces, problems, topology: t };
}

/**
 * Builds the lab, or completes a partial one (including bringing back up a
 * link someone took down). Idempotent: on a complete lab it runs nothing.
 * When it changed something it resolves once every link is operationally
 * up, so the LAN forwards from the first frame.
 * Rejects with IpCommandError naming the failing command and its stderr.
 * Two labUp calls for the same prefix must not run at the same time.
 */
export async function labUp(opts?: LabOptions): Promise<LabUpResult> {
  const t = topologyOf(opts);
  const commands: string[] = [];
  // Deleting a misplaced veth can take a wanted link with it: plan again
  // until nothing is left to do (a complete lab needs no second round).
  for (let round = 0; round < 3; round++) {
    const { existing, links } = await snapshot(t);
    const steps = plan(t, existing, links);
    if (steps.length === 0) {
      if (commands.length > 0) await untilForwarding(t);
      return { prefix: t.prefix, commands };
    }
    for (const step of steps) {
      commands.push(formatIp(step.args));
      try {
        await runIp(step.args);
      } catch (err) {
        if (step.tolerateMissing === true && err instanceof IpCommandError && /Cannot find device|does not exist/.test(err.stderr)) continue;
        throw err;
      }
    }
  }
  const left = (await labStatus(opts)).problems;
  if (left.length > 0) throw new Error(`lab: still incomplete after labUp: ${left.join("; ")}`);
  return { prefix: t.prefix, commands };
}

/** How long links may take to come operationally up after labUp changed them. */
const OPER_UP_TIMEOUT_MS = 5_000;
const OPER_UP_POLL_MS = 50;

/**
 * Resolves when every lab link is operationally up. The kernel reports a
 * new carrier through linkwatch, batched up to ~1 s later; until then a
 * bridge does not forward through that port. Polls `ip` (there is no
 * cheaper event to wait on from here), bounded by OPER_UP_TIMEOUT_MS.
 */
async function untilForwarding(t: LabTopology): Promise<void> {
  const deadline = monotonicMs() + OPER_UP_TIMEOUT_MS;
  const wanted = wantedLinks(t).filter((w) => w.kind !== "loopback");
  for (;;) {
    const { links } = await snapshot(t);
    const notUp = wanted.filter((w) => links.get(w.ns)?.get(w.name)?.operUp !== true);
    if (notUp.length === 0) return;
    if (monotonicMs() > deadline) {
      throw new Error(`lab: links not operationally up ${OPER_UP_TIMEOUT_MS} ms after labUp: ${notUp.map((w) => `${w.ns}/${w.name}`).join(", ")}`);
    }
    await new Promise((res) => setTimeout(res, OPER_UP_POLL_MS));
  }
}

/**
 * Deletes the lab's namespaces (their interfaces go with them). Idempotent:
 * a missing namespace is skipped. Processes still inside a namespace are not
 * touched; they are reported in `busy`.
 */
export async function labDown(opts?: LabOptions): Promise<LabDownResult> {
  const t = topologyOf(opts);
  const existing = await listNetns();
  const removed: string[] = [];
  const busy: { netns: string; pids: number[] }[] = [];
  for (const ns of [t.namespaces.h1, t.namespaces.h2, t.namespaces.client, t.namespaces.lan]) {
    if (!existing.has(ns)) continue;
    const pids = (await runIp(["netns", "pids", ns]))
      .split(/\s+/)
      .filter((s) => s !== "")
      .map(Number);
    if (pids.length > 0) busy.push({ netns: ns, pids });
    try {
      await runIp(["netns", "del", ns]);
    } catch (err) {
      // Someone else removed it meanwhile: that is what we wanted.
      if (err instanceof IpCommandError && /No such file or directory/.test(err.stderr)) continue;
      throw err;
    }
    removed.push(ns);
  }
  return { prefix: t.prefix, removed, busy };
}
