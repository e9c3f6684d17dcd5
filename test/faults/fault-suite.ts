/**
 * The fault-injection suite (issue 7): each run protects a Redis guest in
 * COLO compare mode with a replicated AOF disk (appendfsync always) and an
 * arbiter, drives the verifying client (src/demo/verify-client.ts) from
 * the client namespace, injects one fault picked at random, and checks:
 *
 * - acknowledged writes lost: must be 0 (every acknowledged SET read back
 *   from whoever serves the guest's address afterwards; INCR step rules);
 * - acknowledged writes before the fault and after it: both must be > 0
 *   (a run whose client wrote nothing on one side of the fault proves
 *   nothing about it);
 * - split brains: must be 0 (never two sides releasing output at once:
 *   "primary" or "unprotected", running; polled every 100 ms);
 * - failover time as the client saw it (the longest gap between two
 *   acknowledgements, detection included) and connection resets.
 *
 * Faults: SIGKILL of the primary; of the secondary; of the primary in the
 * middle of a checkpoint (test hook COLO_TEST_CHECKPOINT_DELAY_MS; the
 * survivor's count of discarded half checkpoints tells whether the kill
 * landed inside one: a run where it did not is "missed", a failure); the
 * replication link down for good (both sides alive: the arbiter rule,
 * docs/replication.md); the link flapping (down/up below and above the
 * peer timeout); 20% packet loss on the link for 5 s (nftables).
 */
import { spawn } from "node:child_process";
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { createDataDisk } from "../../guest/mkdisk.js";
import { request } from "../../src/api/control-client.js";
import { vmRunFiles } from "../../src/api/paths.js";
import { seededRandom } from "../../src/state/testing.js";
import type { LabTopology } from "../../src/lab/topology.js";
import { REPO_ROOT, run, runIn } from "../tools/run.js";
import { TEST_ENGINE, writeGuestConfig } from "../tools/guest-fixture.js";
import { Pair, type VmStatusJson } from "../tools/pair-fixture.js";
import { AckProgress, runFailures } from "./run-checks.js";

export const FAULT_KINDS = ["kill-primary", "kill-secondary", "kill-primary-mid-checkpoint", "link-down", "link-flap", "packet-loss", "kill-primary-engine"] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/**
 * The kinds that apply on an engine: kill-primary-engine SIGKILLs the
 * primary's engine process (QEMU), which only the qemu engine has (emu runs
 * the guest inside the daemon: kill-primary is that case).
 */
export function faultKindsFor(engine: string): FaultKind[] {
  return FAULT_KINDS.filter((k) => k !== "kill-primary-engine" || engine === "qemu");
}

export interface VerifySummary {
  acknowledged: number;
  verified: number;
  lostCount: number;
  unacknowledged: number;
  connectionResets: number;
  maxAckGapMs: number;
  incr: { acknowledged: number; violations: number };
  ok: boolean;
}

export interface RunResult {
  run: number;
  fault: FaultKind;
  /** Who serves the guest afterwards: "h1", "h2", or "none". */
  survivor: string;
  outcome: { h1: string; h2: string };
  lostWrites: number;
  incrViolations: number;
  acknowledged: number;
  /** Commands the client saw acknowledged before the fault was injected (its last progress line then). */
  ackedBeforeFault: number;
  /** Commands acknowledged after the fault: counted from a progress line printed after the fault ended. */
  ackedAfterFault: number;
  connectionResets: number;
  splitBrain: boolean;
  failoverMs: number;
  /** kill-primary-mid-checkpoint only: whether the kill landed inside a checkpoint. */
  midCheckpoint?: MidCheckpoint;
  ms: number;
  /** Why the run failed before its checks (an exception, no survivor, a missed mid-checkpoint kill). */
  error?: string;
}

export interface MidCheckpoint {
  /** The survivor (the secondary) had a checkpoint begun and not applied when the primary died. */
  hit: boolean;
  /** The survivor's `discardedCheckpoints` after the takeover; null when it did not answer. */
  discardedCheckpoints: number | null;
  /** The primary was seen paused (inside a checkpoint) at some point before the kill. */
  pausedSeen: boolean;
  /** Operator checkpoints asked for before the kill. */
  checkpointRequests: number;
}

export interface SuiteSummary {
  runs: number;
  seed: number;
  faultsByKind: Record<string, number>;
  acknowledgedWrites: number;
  lostWrites: number;
  incrViolations: number;
  connectionResets: number;
  splitBrains: number;
  /** Runs with any failure (test/faults/run-checks.ts runFailures). */
  failedRuns: number;
  failoverMs: { min: number; p50: number; p90: number; max: number } | undefined;
  details: RunResult[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` every 100 ms until it holds (true) or `timeoutMs` passed (false). */
async function until(fn: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() >= deadline) return false;
    await sleep(100);
  }
  return true;
}

/** A side releases output to the LAN: a running primary, or a side running alone. */
function live(s: VmStatusJson | undefined): boolean {
  if (!s || s.state !== "running") return false;
  const mode = s.replication?.mode;
  return mode === "primary" || mode === "unprotected" || mode === undefined;
}

export class FaultSuite {
  private readonly pair: Pair;

  constructor(
    private readonly lab: LabTopology,
    private readonly work: string,
    keyFile: string,
    private readonly log: (line: string) => void = (l) => process.stderr.write(l + "\n"),
  ) {
    this.pair = new Pair(lab, "flt", join(work, "run"), keyFile);
  }

  /** The control socket of the VM daemon on a lab host (what `colo status` in that namespace talks to). */
  private socket(host: string): string {
    return vmRunFiles("flt", join(this.work, "run", "netns", host)).socket;
  }

  /** `colo status flt` on `host`, asked on the daemon's socket directly (a poll takes ms, not a process start). */
  private async tryStatus(host: string): Promise<VmStatusJson | undefined> {
    try {
      return (await request(this.socket(host), { op: "status" }, 10_000)) as VmStatusJson;
    } catch {
      return undefined;
    }
  }

  /**
   * SIGKILL of the primary inside a checkpoint: an operator checkpoint is
   * asked for, and once the primary shows paused in it, 300 ms later (the
   * part before its pages lasts some 30-100 ms, the hook's delay after them
   * 700 ms) the daemon is killed if it is still paused. A checkpoint that
   * ends before that is followed by another request, 3 at most; after that
   * the primary is killed anyway. Whether the kill landed inside a
   * checkpoint is told afterwards by the survivor (discardedCheckpoints).
   */
  private async killMidCheckpoint(pid: number): Promise<{ pausedSeen: boolean; checkpointRequests: number }> {
    const h1 = this.pair.h1;
    let pausedSeen = false;
    for (let n = 1; n <= 3; n++) {
      let answered = false;
      const asked = request(this.socket(h1), { op: "checkpoint" }, 30_000).then(
        () => (answered = true),
        () => (answered = true),
      );
      const deadline = Date.now() + 10_000;
      while (!answered && Date.now() < deadline) {
        if ((await this.tryStatus(h1))?.state === "paused") {
          pausedSeen = true;
          await sleep(300);
          if ((await this.tryStatus(h1))?.state === "paused") {
            process.kill(pid, "SIGKILL");
            return { pausedSeen, checkpointRequests: n };
          }
          break;
        }
        await sleep(5);
      }
      await asked; // this checkpoint is over (or the request failed, 30 s at most): ask for another
    }
    process.kill(pid, "SIGKILL");
    return { pausedSeen, checkpointRequests: 3 };
  }

  private async ip(ns: string, args: string[]): Promise<void> {
    const r = await run("ip", ["-n", ns, ...args], { timeoutMs: 10_000 });
    if (r.code !== 0) throw new Error(`ip -n ${ns} ${args.join(" ")}: ${r.stderr}`);
  }

  private async nft(ns: string, args: string[]): Promise<void> {
    const r = await runIn(ns, "nft", args, { timeoutMs: 10_000 });
    if (r.code !== 0) throw new Error(`nft ${args.join(" ")}: ${r.stderr}`);
  }

  private async restoreLink(): Promise<void> {
    for (const h of this.lab.hosts) {
      await this.ip(h, ["link", "set", this.lab.replIf, "up"]).catch(() => undefined);
      await runIn(h, "nft", ["delete", "table", "inet", "colofault"], { timeoutMs: 10_000 }).catch(() => undefined);
    }
  }

  async runAll(runs: number, seed: number, kinds: readonly FaultKind[] = faultKindsFor(TEST_ENGINE)): Promise<SuiteSummary> {
    const random = seededRandom(seed); // the suite is reproducible from its seed
    await this.pair.startArbiter();
    const details: RunResult[] = [];
    try {
      for (let i = 0; i < runs; i++) {
        const fault = kinds[Math.floor(random() * kinds.length)] ?? "kill-primary";
        const delayMs = 2000 + Math.floor(random() * 4000);
        this.log(`faults: run ${i + 1}/${runs}: ${fault} after ${delayMs} ms of load`);
        const r = await this.one(i + 1, fault, delayMs);
        this.log(`faults: run ${i + 1}: ${JSON.stringify(r)}`);
        details.push(r);
      }
    } finally {
      await this.pair.destroyAll();
      await this.restoreLink();
      await this.pair.stopArbiter();
    }
    const gaps = details.filter((d) => d.failoverMs > 0).map((d) => d.failoverMs).sort((a, b) => a - b);
    const pct = (p: number) => gaps[Math.min(gaps.length - 1, Math.floor(gaps.length * p))] ?? 0;
    const faultsByKind: Record<string, number> = {};
    for (const d of details) faultsByKind[d.fault] = (faultsByKind[d.fault] ?? 0) + 1;
    return {
      runs,
      seed,
      faultsByKind,
      acknowledgedWrites: details.reduce((a, d) => a + d.acknowledged, 0),
      lostWrites: details.reduce((a, d) => a + d.lostWrites, 0),
      incrViolations: details.reduce((a, d) => a + d.incrViolations, 0),
      connectionResets: details.reduce((a, d) => a + d.connectionResets, 0),
      splitBrains: details.filter((d) => d.splitBrain).length,
      failedRuns: details.filter((d) => runFailures(d).length > 0).length,
      failoverMs: gaps.length > 0 ? { min: gaps[0] ?? 0, p50: pct(0.5), p90: pct(0.9), max: gaps[gaps.length - 1] ?? 0 } : undefined,
      details,
    };
  }

  private async one(n: number, fault: FaultKind, delayMs: number): Promise<RunResult> {
    const t0 = Date.now();
    const pair = this.pair;
    const dir = join(this.work, `run${n}`);
    mkdirSync(dir, { recursive: true });
    const pImg = join(dir, "p.img");
    const sImg = join(dir, "s.img");
    await createDataDisk(pImg, 32, { overwrite: true });
    copyFileSync(pImg, sImg);
    const common = { name: "flt", ip: `${this.lab.guestIp}/24`, mac: "00:16:3e:4c:00:a0", bridge: this.lab.hostBridge, extra: "colo.appendfsync=always" };
    const pCfg = writeGuestConfig({ ...common, dir: join(dir, "p"), disk: pImg }).cfg;
    const sCfg = writeGuestConfig({ ...common, dir: join(dir, "s"), disk: sImg }).cfg;
    const midCheckpoint = fault === "kill-primary-mid-checkpoint";
    const result: RunResult = {
      run: n,
      fault,
      survivor: "none",
      outcome: { h1: "?", h2: "?" },
      lostWrites: 0,
      incrViolations: 0,
      acknowledged: 0,
      ackedBeforeFault: 0,
      ackedAfterFault: 0,
      connectionResets: 0,
      splitBrain: false,
      failoverMs: 0,
      ms: 0,
    };
    let client: ReturnType<typeof spawn> | undefined;
    let pollStop = false;
    const progress = new AckProgress();
    try {
      await pair.protect(pCfg, ["migrate", "--colo"], { secondaryConfig: sCfg, ...(midCheckpoint ? { extraEnv: { COLO_TEST_CHECKPOINT_DELAY_MS: "700" } } : {}) });
      // The verifying client: two connections, verification after stdin closes.
      const c = spawn(
        "ip",
        ["netns", "exec", pair.client, process.execPath, join(REPO_ROOT, "dist/src/demo/verify-client.js"), "--host", pair.ip, "--connections", "2", "--seconds", "300", "--verify-only-after-stdin"],
        { stdio: ["pipe", "pipe", "pipe"] },
      );
      client = c;
      let out = "";
      c.stdout?.on("data", (d: Buffer) => (out += d.toString()));
      c.stderr?.setEncoding("utf8").on("data", (d: string) => progress.feed(d));
      const clientDone = new Promise<number | null>((resolve) => c.on("close", (code) => resolve(code)));

      // Split-brain watch: both sides live at the same poll.
      const watch = (async () => {
        while (!pollStop) {
          const [a, b] = await Promise.all([this.tryStatus(pair.h1), this.tryStatus(pair.h2)]);
          if (live(a) && live(b)) result.splitBrain = true;
          await sleep(100);
        }
      })();

      // The load first: the delay counts from the client's first acknowledged write.
      if (!(await until(() => progress.latest() > 0, 60_000))) throw new Error(`the verifying client acknowledged no write within 60 s: ${progress.tail()}`);
      await sleep(delayMs);
      const primary = await this.tryStatus(pair.h1);
      const secondary = await this.tryStatus(pair.h2);
      if (!primary || !secondary) throw new Error("the pair is not up");
      if (primary.replication?.mode !== "primary" || secondary.replication?.mode !== "secondary") {
        throw new Error(`the pair is not replicating at the fault: h1 ${primary.replication?.mode ?? "-"}, h2 ${secondary.replication?.mode ?? "-"}`);
      }
      result.ackedBeforeFault = progress.latest();
      let midCheckpointKill: { pausedSeen: boolean; checkpointRequests: number } | undefined;
      switch (fault) {
        case "kill-primary":
          process.kill(primary.pid, "SIGKILL");
          break;
        case "kill-secondary":
          process.kill(secondary.pid, "SIGKILL");
          break;
        case "kill-primary-engine":
          if (primary.enginePid === undefined) throw new Error(`${fault}: the primary's status names no engine process (engine ${TEST_ENGINE})`);
          process.kill(primary.enginePid, "SIGKILL");
          break;
        case "kill-primary-mid-checkpoint":
          midCheckpointKill = await this.killMidCheckpoint(primary.pid);
          break;
        case "link-down":
          await this.ip(pair.h1, ["link", "set", this.lab.replIf, "down"]);
          break;
        case "link-flap":
          for (const ms of [300, 300, 1500]) {
            await this.ip(pair.h1, ["link", "set", this.lab.replIf, "down"]);
            await sleep(ms);
            await this.ip(pair.h1, ["link", "set", this.lab.replIf, "up"]);
            await sleep(500);
          }
          break;
        case "packet-loss":
          await this.nft(pair.h1, ["add", "table", "inet", "colofault"]);
          await this.nft(pair.h1, ["add", "chain", "inet", "colofault", "out", "{ type filter hook output priority 0; }"]);
          await this.nft(pair.h1, ["add", "chain", "inet", "colofault", "in", "{ type filter hook input priority 0; }"]);
          await this.nft(pair.h1, ["add", "rule", "inet", "colofault", "out", "oifname", this.lab.replIf, "numgen", "random", "mod", "100", "<", "20", "drop"]);
          await this.nft(pair.h1, ["add", "rule", "inet", "colofault", "in", "iifname", this.lab.replIf, "numgen", "random", "mod", "100", "<", "20", "drop"]);
          await sleep(5000);
          await this.nft(pair.h1, ["delete", "table", "inet", "colofault"]);
          break;
      }
      const faultEnd = Date.now();
      // Let the outcome settle (detection 1 s, lease up to 1 s more), then keep the client going a little.
      await sleep(4000);
      await this.restoreLink();
      await sleep(2000);
      const [a, b] = await Promise.all([this.tryStatus(pair.h1), this.tryStatus(pair.h2)]);
      result.outcome = { h1: a ? `${a.state}/${a.replication?.mode ?? "-"}` : "gone", h2: b ? `${b.state}/${b.replication?.mode ?? "-"}` : "gone" };
      result.survivor = live(a) ? "h1" : live(b) ? "h2" : "none";
      if (midCheckpointKill) {
        const discarded = b?.replication?.discardedCheckpoints ?? null;
        const mid: MidCheckpoint = { hit: discarded !== null && discarded > 0, discardedCheckpoints: discarded, ...midCheckpointKill };
        result.midCheckpoint = mid;
        if (!mid.hit) {
          result.error = `missed: the kill did not land inside a checkpoint (primary seen paused: ${mid.pausedSeen}, checkpoint requests: ${mid.checkpointRequests}, the survivor's discardedCheckpoints: ${discarded ?? "no answer"})`;
        }
      }
      // Writes after the fault: counted from the first progress line that came 1 s or more after the fault ended
      // (printed after it: lines come a second apart, moments after they are printed); some are waited for, 30 s at most.
      const cutFrom = faultEnd + 1000;
      await until(() => {
        const cut = progress.firstFrom(cutFrom);
        return cut !== undefined && progress.latest() > cut.acked;
      }, 30_000);
      const cut = progress.firstFrom(cutFrom);
      result.ackedAfterFault = cut ? progress.latest() - cut.acked : 0;
      pollStop = true;
      await watch;
      c.stdin?.end();
      const code = await Promise.race([clientDone, sleep(120_000).then(() => "timeout" as const)]);
      if (code === "timeout") throw new Error(`the verifying client did not finish: ${progress.tail()}`);
      const summary = JSON.parse(out) as VerifySummary;
      result.lostWrites = summary.lostCount;
      result.incrViolations = summary.incr.violations;
      result.acknowledged = summary.acknowledged + summary.incr.acknowledged;
      result.connectionResets = summary.connectionResets;
      result.failoverMs = summary.maxAckGapMs;
      if (result.survivor === "none") result.error = [result.error, "no side serves the guest after the fault"].filter((e) => e !== undefined).join("; ");
    } catch (err) {
      const message = (err as Error).message;
      result.error = result.error === undefined ? message : `${result.error}; ${message}`;
    } finally {
      pollStop = true;
      if (client && client.exitCode === null) client.kill("SIGKILL");
      await pair.destroyAll();
      await this.restoreLink();
      result.ms = Date.now() - t0;
    }
    return result;
  }
}
