/**
 * Tests only: a real etcd cluster (Debian's etcd-server, etcd 3.4) of N
 * members for the tests of src/api/etcd-arbiter.ts. Every member listens on
 * 127.0.0.1 with ports of its own inside one network namespace made for
 * the cluster (`cetcd-<pid>-<n>`, loopback only: no traffic leaves it);
 * the clients run there too (etcd-driver-testing.ts). Data and logs go to a
 * temporary folder (on /dev/shm when there is one, so the disk load of
 * other jobs on the machine does not slow etcd's fsyncs past the client's
 * 500 ms bound); `remove()` kills every member by PID, deletes the
 * namespace and the folder. Readiness is waited for on each member's
 * /health endpoint, never with a fixed sleep.
 *
 * etcd's own timing is its default (heartbeat 100 ms, election 1000 ms),
 * given explicitly: with it etcd's minimum lease TTL is 2 s.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { monotonicMs } from "../sys/clock.js";
import { ip, isRoot } from "../sys/test-support.js";
import { EtcdDriver } from "./etcd-driver-testing.js";

/** etcd's defaults, named so the tests' timing is explicit (etcd.io: "Tuning"). */
export const ETCD_HEARTBEAT_MS = 100;
export const ETCD_ELECTION_MS = 1000;
/** Members to be healthy within this (start, restart): generous, the machine may be busy. */
const HEALTHY_BOUND_MS = 60_000;
const CLIENT_PORT_BASE = 23790;
const PEER_PORT_BASE = 23800;

/** The etcd binary on PATH, or undefined. */
export function etcdBinary(): string | undefined {
  for (const dir of (process.env.PATH ?? "/usr/bin:/bin").split(delimiter)) {
    const p = join(dir, "etcd");
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return undefined;
}

/** Why these tests cannot run here, or false. Under CI=true nothing is skipped: a missing precondition fails. */
export function etcdSkipReason(): string | false {
  if (/^(true|1)$/i.test(process.env.CI ?? "")) return false;
  if (!isRoot()) return "needs root (network namespaces for the etcd cluster)";
  if (!etcdBinary()) return "needs etcd on PATH (Debian package etcd-server; scripts/setup-host.sh installs it)";
  return false;
}

interface Member {
  name: string;
  clientPort: number;
  peerPort: number;
  dataDir: string;
  log: string;
  child?: ChildProcess;
  exited?: Promise<void>;
}

let clusters = 0;

export class EtcdCluster {
  private removed = false;

  private constructor(
    readonly netns: string,
    readonly dir: string,
    private readonly members: Member[],
    readonly driver: EtcdDriver,
    private readonly token: string,
    /** Clients outside the namespace reach the members here (besides 127.0.0.1); the namespace is the caller's then. */
    private readonly shared?: { host: string },
  ) {}

  /**
   * Makes the namespace, starts `size` members and the driver, and waits
   * until every member is healthy. With `inside`: the members run in that
   * existing namespace (the lab's LAN, for VM tests whose daemons use the
   * cluster) and also listen on `inside.host`; the namespace is left alone
   * by remove().
   */
  static async start(size = 3, inside?: { netns: string; host: string }): Promise<EtcdCluster> {
    const bin = etcdBinary();
    if (!bin) throw new Error("precondition missing: etcd (Debian package etcd-server) is not on PATH");
    if (!isRoot()) throw new Error("precondition missing: root (network namespaces)");
    const n = ++clusters;
    const netns = inside?.netns ?? `cetcd-${process.pid}-${n}`;
    const base = existsSync("/dev/shm") ? "/dev/shm" : tmpdir();
    const dir = mkdtempSync(join(base, "colo-etcd-"));
    const members: Member[] = Array.from({ length: size }, (_, i) => ({
      name: `m${i + 1}`,
      clientPort: CLIENT_PORT_BASE + i + 1,
      peerPort: PEER_PORT_BASE + i + 1,
      dataDir: join(dir, `m${i + 1}`),
      log: join(dir, `m${i + 1}.log`),
    }));
    if (!inside) await ip("netns", "add", netns);
    let driver: EtcdDriver | undefined;
    try {
      await ip("-n", netns, "link", "set", "lo", "up");
      driver = await EtcdDriver.start(netns);
    } catch (err) {
      await driver?.stop();
      if (!inside) await ip("netns", "del", netns).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    const cluster = new EtcdCluster(netns, dir, members, driver, `colo-test-${process.pid}-${n}`, inside ? { host: inside.host } : undefined);
    try {
      for (let i = 0; i < size; i++) cluster.spawnMember(i, "new");
      await cluster.waitHealthy(members.map((_, i) => i));
    } catch (err) {
      await cluster.remove();
      throw err;
    }
    return cluster;
  }

  get size(): number {
    return this.members.length;
  }

  /** `etcd://127.0.0.1:P,...` (or the shared host's address) for the members `which` (default: all). */
  address(which: number[] = this.members.map((_, i) => i)): string {
    const host = this.shared?.host ?? "127.0.0.1";
    return `etcd://${which.map((i) => `${host}:${this.member(i).clientPort}`).join(",")}`;
  }

  clientPort(i: number): number {
    return this.member(i).clientPort;
  }

  private member(i: number): Member {
    const m = this.members[i];
    if (!m) throw new Error(`no member ${i}`);
    return m;
  }

  private spawnMember(i: number, state: "new" | "existing"): void {
    const m = this.member(i);
    mkdirSync(m.dataDir, { recursive: true });
    const url = (port: number) => `http://127.0.0.1:${port}`;
    const args = [
      ...["--name", m.name, "--data-dir", m.dataDir, "--logger", "zap", "--log-outputs", "stderr"],
      ...["--listen-client-urls", [url(m.clientPort), ...(this.shared ? [`http://${this.shared.host}:${m.clientPort}`] : [])].join(",")],
      ...["--advertise-client-urls", this.shared ? `http://${this.shared.host}:${m.clientPort}` : url(m.clientPort)],
      ...["--listen-peer-urls", url(m.peerPort), "--initial-advertise-peer-urls", url(m.peerPort)],
      ...["--initial-cluster", this.members.map((x) => `${x.name}=${url(x.peerPort)}`).join(","), "--initial-cluster-state", state],
      ...["--initial-cluster-token", this.token, "--heartbeat-interval", String(ETCD_HEARTBEAT_MS), "--election-timeout", String(ETCD_ELECTION_MS)],
    ];
    const fd = openSync(m.log, "a");
    try {
      // `ip netns exec` execs etcd in place: the child's PID is etcd's.
      const child = spawn("ip", ["netns", "exec", this.netns, etcdBinary() ?? "etcd", ...args], { stdio: ["ignore", fd, fd] });
      m.child = child;
      m.exited = new Promise((resolve) => child.once("exit", () => resolve()));
      child.on("error", () => undefined); // reported by the health wait
    } finally {
      closeSync(fd);
    }
  }

  /** The member's PID (undefined when it is not running). */
  pid(i: number): number | undefined {
    const c = this.member(i).child;
    return c && c.exitCode === null && c.signalCode === null ? c.pid : undefined;
  }

  /** SIGKILL to member `i` by its PID; returns once it has exited. */
  async kill(i: number): Promise<void> {
    const m = this.member(i);
    const pid = this.pid(i);
    if (pid !== undefined) process.kill(pid, "SIGKILL");
    await m.exited;
    m.child = undefined;
  }

  /** Starts member `i` again on its data folder; returns once it is healthy. */
  async restart(i: number): Promise<void> {
    if (this.pid(i) !== undefined) throw new Error(`member ${i} is running`);
    this.spawnMember(i, "existing");
    await this.waitHealthy([i]);
  }

  /** Waits until each member of `which` answers {"health":"true"} on /health (it has a leader and serves reads). */
  async waitHealthy(which: number[], boundMs = HEALTHY_BOUND_MS): Promise<void> {
    const deadline = monotonicMs() + boundMs;
    for (const i of which) {
      let last = "";
      for (;;) {
        if (this.pid(i) === undefined) throw new Error(`etcd member ${i} exited; its log ends: ${this.logTail(i)}`);
        const r = await this.driver.request("health", { port: this.member(i).clientPort, timeoutMs: 1000 });
        if (r.healthy === true) break;
        last = String(r.detail);
        if (monotonicMs() > deadline) throw new Error(`etcd member ${i} not healthy within ${boundMs} ms (${last}); its log ends: ${this.logTail(i)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /** The member that is leader now (its /metrics say so), waiting for an election if there is none yet. */
  async leader(boundMs = HEALTHY_BOUND_MS): Promise<number> {
    const deadline = monotonicMs() + boundMs;
    for (;;) {
      for (let i = 0; i < this.members.length; i++) {
        if (this.pid(i) === undefined) continue;
        if ((await this.driver.request("is-leader", { port: this.member(i).clientPort, timeoutMs: 1000 })).leader === true) return i;
      }
      if (monotonicMs() > deadline) throw new Error(`no etcd leader within ${boundMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  logTail(i: number, lines = 5): string {
    try {
      return readFileSync(this.member(i).log, "utf8").trim().split("\n").slice(-lines).join(" | ");
    } catch {
      return "(no log)";
    }
  }

  /** Everything goes: the driver, every member (SIGKILL by PID), the namespace, the folder. Idempotent. */
  async remove(): Promise<void> {
    if (this.removed) return;
    this.removed = true;
    await this.driver.stop();
    for (let i = 0; i < this.members.length; i++) await this.kill(i);
    if (!this.shared) await ip("netns", "del", this.netns).catch(() => undefined);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
