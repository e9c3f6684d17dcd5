/**
 * What `--arbiter` names: the built-in arbiter (`colo arbiter`, HOST[:PORT],
 * src/api/arbiter.ts) or an etcd v3 cluster (`etcd://HOST:PORT[,HOST:PORT...]`,
 * src/api/etcd-arbiter.ts), and the daemon's client for either. Both hold the
 * VM's lease under the same rule (src/colo/lease.ts).
 *
 * Parsed once where the option is read (the CLI); the daemon gets the
 * canonical form back (formatArbiterAddress) and parses it again.
 */
import { formatEndpoint, parseEndpoint, type Endpoint } from "../channel/secure-channel.js";
import type { Arbiter, LeaseAnswer } from "../colo/lease.js";
import { ArbiterClient, DEFAULT_ARBITER_PORT } from "./arbiter.js";

/** etcd's client port (etcd's own default for --listen-client-urls). */
export const DEFAULT_ETCD_PORT = 2379;
/** More members than this in one etcd:// list is a mistake (etcd clusters have 3, 5 or 7). */
const MAX_ETCD_ENDPOINTS = 16;
const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//;
/** A host name or IPv4 address (RFC 1123 labels); IPv6 goes in brackets. */
const HOST_NAME = /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;
const IPV6 = /^[0-9A-Fa-f:.]+$/;

export type ArbiterAddress = { kind: "colo"; at: Endpoint } | { kind: "etcd"; endpoints: Endpoint[] };

/** A bad `--arbiter` value; the message names the option and the value, on one line. */
export class ArbiterAddressError extends Error {
  constructor(
    readonly value: string,
    readonly reason: string,
  ) {
    super(`--arbiter ${JSON.stringify(value)}: ${reason}`);
    this.name = "ArbiterAddressError";
  }
}

const ETCD_FORM = "expected etcd://HOST:PORT[,HOST:PORT...]";

function etcdEndpoint(value: string, text: string, index: number): Endpoint {
  const what = `etcd endpoint ${index + 1} (${JSON.stringify(text)})`;
  if (text === "") throw new ArbiterAddressError(value, `etcd endpoint ${index + 1} is empty (${ETCD_FORM})`);
  const m = /^\[([^\]]*)\](?::([^:]*))?$/.exec(text) ?? /^([^:[\]]*)(?::([^:]*))?$/.exec(text);
  if (!m) throw new ArbiterAddressError(value, `${what} is not HOST[:PORT] (IPv6 in brackets: [ADDR]:PORT)`);
  const host = m[1] ?? "";
  const bracketed = text.startsWith("[");
  if (host === "") throw new ArbiterAddressError(value, `${what} has an empty host`);
  if (bracketed ? !IPV6.test(host) || !host.includes(":") : !HOST_NAME.test(host)) throw new ArbiterAddressError(value, `${what}: bad host ${JSON.stringify(host)}`);
  const portText = m[2];
  if (portText === undefined) return { host, port: DEFAULT_ETCD_PORT };
  const port = /^[0-9]{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ArbiterAddressError(value, `${what}: bad port ${JSON.stringify(portText)} (expected 1..65535)`);
  return { host, port };
}

/** Parses an `--arbiter` value; throws ArbiterAddressError saying what is wrong. */
export function parseArbiterAddress(value: string): ArbiterAddress {
  const scheme = SCHEME.exec(value);
  if (!scheme) {
    try {
      return { kind: "colo", at: parseEndpoint(value, DEFAULT_ARBITER_PORT) };
    } catch (err) {
      throw new ArbiterAddressError(value, `${(err as Error).message} (the built-in arbiter; etcd is etcd://HOST:PORT[,HOST:PORT...])`);
    }
  }
  if ((scheme[1] ?? "").toLowerCase() !== "etcd") {
    throw new ArbiterAddressError(value, `unknown scheme ${JSON.stringify(scheme[1])}: the built-in arbiter is HOST[:PORT], etcd is etcd://HOST:PORT[,HOST:PORT...]`);
  }
  const rest = value.slice(scheme[0].length);
  if (rest === "") throw new ArbiterAddressError(value, `no endpoint (${ETCD_FORM})`);
  if (/[/?#@\s]/.test(rest)) throw new ArbiterAddressError(value, `${ETCD_FORM}: no path, query, user or spaces`);
  const parts = rest.split(",");
  if (parts.length > MAX_ETCD_ENDPOINTS) throw new ArbiterAddressError(value, `${parts.length} etcd endpoints: at most ${MAX_ETCD_ENDPOINTS}`);
  const endpoints = parts.map((p, i) => etcdEndpoint(value, p, i));
  const seen = new Set<string>();
  for (const e of endpoints) {
    const s = formatEndpoint(e);
    if (seen.has(s)) throw new ArbiterAddressError(value, `etcd endpoint ${s} is listed twice`);
    seen.add(s);
  }
  return { kind: "etcd", endpoints };
}

/** The canonical text of an address (what parseArbiterAddress reads back). */
export function formatArbiterAddress(a: ArbiterAddress): string {
  return a.kind === "colo" ? formatEndpoint(a.at) : `etcd://${a.endpoints.map(formatEndpoint).join(",")}`;
}

/**
 * The etcd client, loaded when first made: etcd3 brings gRPC and its protobuf
 * definitions (about 0.5 s to load here), which no colo command but a daemon
 * holding an etcd lease needs. The load starts at once, so it is done by the
 * time the first lease is asked for.
 */
class LazyEtcdArbiter implements Arbiter {
  private readonly loading: Promise<Arbiter>;

  constructor(endpoints: Endpoint[]) {
    this.loading = import("./etcd-arbiter.js").then((m) => new m.EtcdArbiter(endpoints));
    this.loading.catch(() => undefined); // reported by the first call
  }

  async loaded(): Promise<void> {
    await this.loading;
  }

  async acquire(vm: string, holder: string, ttlMs: number, solo: boolean): Promise<LeaseAnswer> {
    return (await this.loading).acquire(vm, holder, ttlMs, solo);
  }

  async release(vm: string, holder: string): Promise<void> {
    return (await this.loading).release(vm, holder);
  }

  close(): void {
    void this.loading.then(
      (a) => a.close(),
      () => undefined,
    );
  }
}

/** The daemon's client for the arbiter at `a`; `key` authenticates to the built-in one (etcd is reached without it). */
export function newArbiterClient(a: ArbiterAddress, key: Buffer): Arbiter {
  return a.kind === "colo" ? new ArbiterClient(a.at, key) : new LazyEtcdArbiter(a.endpoints);
}

/**
 * Resolves once `arbiter` (from newArbiterClient) has its code loaded: before
 * a lease that is asked for at once, so the load is not timed as part of it
 * (the holder counts its lease from the request). Rejects if etcd3 cannot load.
 */
export async function arbiterLoaded(arbiter: Arbiter): Promise<void> {
  if (arbiter instanceof LazyEtcdArbiter) await arbiter.loaded();
}
