/**
 * `colo check` on the primary (docs/operations.md "colo check"): given the
 * VM's facts (its daemon's `check` answer) and the config the secondary
 * would get, probe the waiting receiver (check-probe-client.ts), ask the
 * arbiter, and judge every check (check-rules*.ts). Nothing here changes
 * either host: the probe is not a migration, the arbiter is only listed.
 */
import { randomBytes } from "node:crypto";
import { ChannelError, formatEndpoint, type Endpoint } from "../channel/secure-channel.js";
import { elapsedMs, monotonicMs } from "../sys/clock.js";
import { ArbiterClient } from "./arbiter.js";
import { arbiterLoaded, formatArbiterAddress, newArbiterClient, type ArbiterAddress } from "./arbiter-address.js";
import { probeReceiver, ProbeError, type ProbeClientOptions } from "./check-probe-client.js";
import type { CheckName, CheckResult } from "./check-result.js";
import { evaluateChecks } from "./check-rules-host.js";
import type { CheckFacts, LeaseEntry } from "./check-rules.js";

/** The throwaway lease an etcd arbiter is asked for (and released at once). */
const THROWAWAY_LEASE_MS = 2_000;

export interface CheckInputs {
  key: { path: string; bytes: number; mode: number; key: Buffer };
  vm: CheckFacts["vm"];
  secondary: CheckFacts["secondary"];
  to: Endpoint;
  arbiter?: { at: ArbiterAddress; leaseMs: number };
  probe?: ProbeClientOptions;
}

export interface CheckReport {
  /** No check failed (warnings allowed): `colo check` exits 0. */
  ok: boolean;
  vm: string;
  to: string;
  counts: { ok: number; warn: number; fail: number };
  results: CheckResult[];
  /** Checks that could not run (the receiver could not be probed). */
  skipped: CheckName[];
  ms: number;
}

function isLeaseList(v: unknown): v is LeaseEntry[] {
  return Array.isArray(v) && v.every((l) => typeof l === "object" && l !== null && typeof (l as LeaseEntry).vm === "string" && typeof (l as LeaseEntry).holder === "string");
}

/**
 * Whether the arbiter answers, and how fast: the built-in one is asked for
 * its list (nothing changes; the VM's lease, if held, is in it); etcd, which
 * has no list, is given a throwaway lease and its release.
 */
async function askArbiter(at: ArbiterAddress, key: Buffer): Promise<NonNullable<CheckFacts["arbiter"]>["reach"]> {
  const t = monotonicMs();
  if (at.kind === "colo") {
    const client = new ArbiterClient(at.at, key);
    try {
      const leases = await client.list();
      if (!isLeaseList(leases)) return { ok: false, error: "its list is malformed" };
      return { ok: true, rttMs: monotonicMs() - t, leases };
    } catch (err) {
      return { ok: false, error: err instanceof Error ? err.message : String(err) };
    } finally {
      client.close();
    }
  }
  const client = newArbiterClient(at, key);
  try {
    await arbiterLoaded(client);
    const throwaway = `colo-check-${randomBytes(6).toString("hex")}`;
    const holder = `check:${process.pid}`;
    const started = monotonicMs();
    const a = await client.acquire(throwaway, holder, THROWAWAY_LEASE_MS, false);
    const rttMs = monotonicMs() - started;
    await client.release(throwaway, holder);
    if (!a.granted) return { ok: false, error: `a throwaway lease was refused (held by ${a.holder})` };
    return { ok: true, rttMs };
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err) };
  } finally {
    client.close();
  }
}

export async function runCheck(inputs: CheckInputs): Promise<CheckReport> {
  const started = monotonicMs();
  const to = formatEndpoint(inputs.to);
  let peer: CheckFacts["peer"];
  try {
    peer = { ok: true, probe: await probeReceiver(inputs.to, inputs.key.key, inputs.secondary.source, inputs.probe) };
  } catch (err) {
    if (err instanceof ChannelError) peer = { ok: false, code: err.code, message: err.message };
    else if (err instanceof ProbeError) peer = { ok: false, code: "PROBE", message: err.message };
    else throw err;
  }
  const arbiter = inputs.arbiter ? { at: formatArbiterAddress(inputs.arbiter.at), leaseMs: inputs.arbiter.leaseMs, reach: await askArbiter(inputs.arbiter.at, inputs.key.key) } : undefined;
  const facts: CheckFacts = {
    key: { path: inputs.key.path, bytes: inputs.key.bytes, mode: inputs.key.mode },
    vm: inputs.vm,
    secondary: inputs.secondary,
    to,
    peer,
    ...(arbiter ? { arbiter } : {}),
  };
  const { results, skipped } = evaluateChecks(facts);
  const count = (s: CheckResult["status"]) => results.filter((r) => r.status === s).length;
  const counts = { ok: count("ok"), warn: count("warn"), fail: count("fail") };
  return { ok: counts.fail === 0 && skipped.length === 0, vm: inputs.vm.name, to, counts, results, skipped, ms: elapsedMs(started) };
}
