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
 * - split brains, from the wire: after the fault, the guest's frames reach
 *   the LAN from exactly one host (test/faults/wire-watch.ts: counters of
 *   the guest's source MAC on the LAN bridge's ports), the host the
 *   daemons' status names as the survivor. The daemons' own word (both
 *   "primary"/"unprotected" and running at one 100 ms poll) is recorded as
 *   `statusOverlapPolls`, not judged: a side that was frozen reports its
 *   old mode until it has looked at its clocks;
 * - failover time as the client saw it (the longest gap between two
 *   acknowledgements, detection included) and connection resets.
 *
 * Faults: SIGKILL of the primary; of the secondary; of the primary in the
 * middle of a checkpoint (test hook COLO_TEST_CHECKPOINT_DELAY_MS; the
 * survivor's count of discarded half checkpoints tells whether the kill
 * landed inside one: a run where it did not is "missed", a failure); the
 * replication link down for good (both sides alive: the arbiter rule,
 * docs/replication.md); the link flapping (down/up below and above the
 * peer timeout); 20% packet loss on the link for 5 s (nftables); the
 * primary's or the secondary's host frozen (SIGSTOP of its daemon and
 * engine for twice the peer timeout, then SIGCONT); the secondary killed
 * during the protection's start (the load runs, `colo migrate --colo`
 * starts, the secondary is SIGKILLed once it holds the VM and before
 * checkpoint 0: the start must fail and the primary run on, nothing lost;
 * a kill that came after checkpoint 0 is "missed", a failure).
 * test/faults/fault-inject.ts.
 *
 * Every run is on its own: its own lab (namespaces made anew), arbiter,
 * key, run directory and images, all removed at its end; a run that fails
 * still reports what each side and the wire showed, and cannot fail the
 * next one.
 */
import { spawn } from "node:child_process";
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { createDataDisk } from "../../guest/mkdisk.js";
import { request } from "../../src/api/control-client.js";
import { vmRunFiles } from "../../src/api/paths.js";
import { generateKeyFile } from "../../src/channel/key.js";
import { labDown, labUp } from "../../src/lab/lab.js";
import { seededRandom } from "../../src/state/testing.js";
import type { LabTopology } from "../../src/lab/topology.js";
import { REPO_ROOT, type RunResult as CommandResult } from "../tools/run.js";
import { TEST_ENGINE, writeGuestConfig } from "../tools/guest-fixture.js";
import { stopDaemonsUnder } from "../tools/interrupt.js";
import { Pair, type VmStatusJson } from "../tools/pair-fixture.js";
import { faultKindsFor, linkDown, linkFlap, packetLoss, restoreLinks, sleep, stall, STALL_MS, type FaultKind } from "./fault-inject.js";
import { AckProgress, runFailures } from "./run-checks.js";
import { addError, blankResult, type MidCheckpoint, type RunResult, type SuiteSummary, type VerifySummary } from "./run-result.js";
import { WireWatch, wireDelta, wireSender, type WireCounts } from "./wire-watch.js";

export { FAULT_KINDS, faultKindsFor, type FaultKind } from "./fault-inject.js";
export type { MidCheckpoint, RunResult, SuiteSummary, VerifySummary, WireResult } from "./run-result.js";

/** The suite's clock: monotonic (the wall clock may step during a run). */
const now = (): number => performance.now();

/** Polls `fn` every 100 ms until it holds (true) or `timeoutMs` passed (false). */
async function until(fn: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = now() + timeoutMs;
  while (!fn()) {
    if (now() >= deadline) return false;
    await sleep(100);
  }
  return true;
}

/** `until` for a condition that must be asked for (a status request). */
async function untilAsync(fn: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = now() + timeoutMs;
  while (!(await fn())) {
    if (now() >= deadline) return false;
    await sleep(50);
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
  /** The run in progress's pair (each run has its own). */
  private pair: Pair | undefined;
  private work = "";
  /** abort() was called: no run starts after it, and the one it cut short is not counted. */
  private stopping = false;

  /** `work`: a folder for the runs (one subfolder each). The lab's namespaces are made anew for every run. */
  constructor(
    private readonly lab: LabTopology,
    private readonly root: string,
    private readonly log: (line: string) => void = (l) => process.stderr.write(l + "\n"),
    /** `memoryMiB`: the guest's RAM (default: the engine's, guest-fixture.ts). */
    private readonly guest: { memoryMiB?: number } = {},
  ) {}

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
    const h1 = this.lab.hosts[0];
    let pausedSeen = false;
    for (let n = 1; n <= 3; n++) {
      let answered = false;
      const asked = request(this.socket(h1), { op: "checkpoint" }, 30_000).then(
        () => (answered = true),
        () => (answered = true),
      );
      const deadline = now() + 10_000;
      while (!answered && now() < deadline) {
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

  /** Ends the run in progress, if any (an interrupted suite): its daemons, arbiter, links and lab. */
  async abort(): Promise<void> {
    this.stopping = true;
    const pair = this.pair; // the run's own teardown (isolated) runs too: both are idempotent
    await pair?.destroyAll();
    await pair?.stopArbiter();
    await restoreLinks(this.lab);
    await labDown({ prefix: this.lab.prefix });
  }

  async runAll(runs: number, seed: number, kinds: readonly FaultKind[] = faultKindsFor(TEST_ENGINE)): Promise<SuiteSummary> {
    const random = seededRandom(seed); // the suite is reproducible from its seed
    const details: RunResult[] = [];
    for (let i = 0; i < runs && !this.stopping; i++) {
      const fault = kinds[Math.floor(random() * kinds.length)] ?? "kill-primary";
      const delayMs = 2000 + Math.floor(random() * 4000);
      this.log(`faults: run ${i + 1}/${runs}: ${fault} after ${delayMs} ms of load`);
      const r = await this.isolated(i + 1, fault, delayMs);
      if (this.stopping) {
        this.log(`faults: run ${i + 1} was cut short by the interruption: not counted`);
        break;
      }
      this.log(`faults: run ${i + 1}: ${JSON.stringify(r)}`);
      details.push(r);
    }
    const gaps = details.filter((d) => d.failoverMs > 0).map((d) => d.failoverMs).sort((a, b) => a - b);
    const pct = (p: number) => gaps[Math.min(gaps.length - 1, Math.floor(gaps.length * p))] ?? 0;
    const faultsByKind: Record<string, number> = {};
    for (const d of details) faultsByKind[d.fault] = (faultsByKind[d.fault] ?? 0) + 1;
    const p99 = gaps.length > 0 ? pct(0.99) : 0;
    return {
      runs: details.length,
      ...(details.length < runs ? { requestedRuns: runs, interrupted: true } : {}),
      seed,
      faultsByKind,
      acknowledgedWrites: details.reduce((a, d) => a + d.acknowledged, 0),
      lostWrites: details.reduce((a, d) => a + d.lostWrites, 0),
      incrViolations: details.reduce((a, d) => a + d.incrViolations, 0),
      connectionResets: details.reduce((a, d) => a + d.connectionResets, 0),
      splitBrains: details.filter((d) => d.splitBrain).length,
      failedRuns: details.filter((d) => runFailures(d).length > 0).length,
      failoverMs: gaps.length > 0 ? { min: gaps[0] ?? 0, p50: pct(0.5), p90: pct(0.9), p99, max: gaps[gaps.length - 1] ?? 0 } : undefined,
      loopDelayMaxMs: Math.max(-1, ...details.flatMap((d) => [d.loopDelayMaxMs.h1, d.loopDelayMaxMs.h2])),
      details,
    };
  }

  /**
   * One run in a world of its own: the lab made anew (what an earlier run
   * left is removed first), a new key, arbiter and run directory; all of
   * it gone at the end, whatever happened. Never throws: a failure of the
   * setup or teardown is the run's error.
   */
  private async isolated(n: number, fault: FaultKind, delayMs: number): Promise<RunResult> {
    const t0 = now();
    this.work = join(this.root, `run${n}`);
    mkdirSync(this.work, { recursive: true });
    const key = join(this.work, "colo.key");
    const result = blankResult(n, fault);
    let pair: Pair | undefined;
    try {
      await labDown({ prefix: this.lab.prefix });
      await labUp({ prefix: this.lab.prefix });
      generateKeyFile(key);
      pair = new Pair(this.lab, "flt", join(this.work, "run"), key);
      this.pair = pair;
      if (this.stopping) throw new Error("interrupted");
      await pair.startArbiter();
      if (this.stopping) throw new Error("interrupted");
      await this.one(pair, result, delayMs);
    } catch (err) {
      addError(result, `setup: ${(err as Error).message}`);
    } finally {
      this.pair = undefined;
      try {
        await pair?.destroyAll();
        // A daemon the interruption caught mid-create (its CLI gone before it answered) is found by its run files.
        await stopDaemonsUnder(join(this.work, "run"));
        await restoreLinks(this.lab);
        await pair?.stopArbiter();
        await labDown({ prefix: this.lab.prefix });
      } catch (err) {
        addError(result, `teardown: ${(err as Error).message}`);
      }
      result.ms = Math.round(now() - t0);
    }
    return result;
  }

  private async one(pair: Pair, result: RunResult, delayMs: number): Promise<void> {
    const fault = result.fault;
    const dir = this.work;
    const pImg = join(dir, "p.img");
    const sImg = join(dir, "s.img");
    await createDataDisk(pImg, 32, { overwrite: true });
    copyFileSync(pImg, sImg);
    const mac = "00:16:3e:4c:00:a0";
    const common = {
      name: "flt",
      ip: `${this.lab.guestIp}/24`,
      mac,
      bridge: this.lab.hostBridge,
      extra: "colo.appendfsync=always",
      ...(this.guest.memoryMiB !== undefined ? { memoryMiB: this.guest.memoryMiB } : {}),
    };
    const pCfg = writeGuestConfig({ ...common, dir: join(dir, "p"), disk: pImg }).cfg;
    const sCfg = writeGuestConfig({ ...common, dir: join(dir, "s"), disk: sImg }).cfg;
    const midCheckpoint = fault === "kill-primary-mid-checkpoint";
    let client: ReturnType<typeof spawn> | undefined;
    let pollStop = false;
    let watch: Promise<void> = Promise.resolve();
    let wire: WireWatch | undefined;
    let wireAtFault: WireCounts | undefined;
    let wireAfter: WireCounts | undefined;
    const progress = new AckProgress();
    const initialSync = fault === "kill-secondary-initial-sync";
    try {
      // Protected before the load, except when the fault strikes the protection's start.
      if (initialSync) await pair.createPrimary(pCfg);
      else await pair.protect(pCfg, ["migrate", "--colo"], { secondaryConfig: sCfg, ...(midCheckpoint ? { extraEnv: { COLO_TEST_CHECKPOINT_DELAY_MS: "700" } } : {}) });
      wire = await WireWatch.start(this.lab, mac);
      // The verifying client: two connections, verification after stdin closes.
      const c = spawn(
        "ip",
        ["netns", "exec", pair.client, process.execPath, join(REPO_ROOT, "dist/src/demo/verify-client.js"), "--host", pair.ip, "--connections", "2", "--seconds", "300", "--verify-only-after-stdin"],
        { stdio: ["pipe", "pipe", "pipe"] },
      );
      client = c;
      let out = "";
      c.stdout?.on("data", (d: Buffer) => (out += d.toString()));
      c.stderr?.setEncoding("utf8").on("data", (d: string) => progress.feed(d, now()));
      const clientDone = new Promise<number | null>((resolve) => c.on("close", (code) => resolve(code)));

      // What the daemons say: both live at one poll (recorded; the wire judges).
      watch = (async () => {
        while (!pollStop) {
          const [a, b] = await Promise.all([this.tryStatus(pair.h1), this.tryStatus(pair.h2)]);
          if (live(a) && live(b)) result.statusOverlapPolls++;
          await sleep(100);
        }
      })();

      // The load first: the delay counts from the client's first acknowledged write.
      if (!(await until(() => progress.latest() > 0, 60_000))) throw new Error(`the verifying client acknowledged no write within 60 s: ${progress.tail()}`);
      await sleep(delayMs);
      let protecting: Promise<CommandResult> | undefined;
      if (initialSync) {
        // The protection starts under load; the secondary is killed once it holds the VM and before checkpoint 0.
        protecting = pair.startProtection(["migrate", "--colo"], { secondaryConfig: sCfg });
        if (!(await untilAsync(async () => (await this.tryStatus(pair.h2)) !== undefined, 120_000))) throw new Error("the secondary never held the VM");
        await sleep(delayMs % 500);
      }
      const primary = await this.tryStatus(pair.h1);
      const secondary = await this.tryStatus(pair.h2);
      if (!primary || !secondary) throw new Error("the pair is not up");
      if (initialSync) {
        if (primary.busy === undefined) throw new Error(`missed: the primary had finished its start (mode ${primary.replication?.mode ?? "-"}) before the kill`);
      } else if (primary.replication?.mode !== "primary" || secondary.replication?.mode !== "secondary") {
        throw new Error(`the pair is not replicating at the fault: h1 ${primary.replication?.mode ?? "-"}, h2 ${secondary.replication?.mode ?? "-"}`);
      }
      result.ackedBeforeFault = progress.latest();
      result.loopDelayMaxMs = { h1: primary.eventLoopDelay?.maxMs ?? -1, h2: secondary.eventLoopDelay?.maxMs ?? -1 };
      wireAtFault = await wire.read();
      let midCheckpointKill: { pausedSeen: boolean; checkpointRequests: number } | undefined;
      switch (fault) {
        case "kill-secondary-initial-sync": {
          process.kill(secondary.pid, "SIGKILL");
          const started = await protecting;
          if (started?.code === 0) addError(result, "missed: the protection succeeded although its secondary was killed during the initial sync");
          break;
        }
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
          await linkDown(this.lab, pair.h1);
          break;
        case "link-flap":
          await linkFlap(this.lab, pair.h1);
          break;
        case "packet-loss":
          await packetLoss(this.lab, pair.h1);
          break;
        case "stall-primary":
          await stall(primary, STALL_MS);
          break;
        case "stall-secondary":
          await stall(secondary, STALL_MS);
          break;
      }
      const faultEnd = now();
      // The wire after the fault: from 500 ms after its end (a frame a frozen side had already decided to send
      // may still leave as it continues; a second sender that lasts is what a split brain looks like).
      await sleep(500);
      wireAfter = await wire.read();
      // Let the outcome settle (detection 1 s, lease up to 1 s more), then keep the client going a little.
      await sleep(3500);
      await restoreLinks(this.lab);
      await sleep(2000);
      if (midCheckpointKill) {
        const b = await this.tryStatus(pair.h2);
        const discarded = b?.replication?.discardedCheckpoints ?? null;
        const mid: MidCheckpoint = { hit: discarded !== null && discarded > 0, discardedCheckpoints: discarded, ...midCheckpointKill };
        result.midCheckpoint = mid;
        if (!mid.hit) {
          addError(result, `missed: the kill did not land inside a checkpoint (primary seen paused: ${mid.pausedSeen}, checkpoint requests: ${mid.checkpointRequests}, the survivor's discardedCheckpoints: ${discarded ?? "no answer"})`);
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
      c.stdin?.end();
      const code = await Promise.race([clientDone, sleep(120_000).then(() => "timeout" as const)]);
      if (code === "timeout") throw new Error(`the verifying client did not finish: ${progress.tail()}`);
      const summary = JSON.parse(out) as VerifySummary;
      result.lostWrites = summary.lostCount;
      result.incrViolations = summary.incr.violations;
      result.acknowledged = summary.acknowledged + summary.incr.acknowledged;
      result.connectionResets = summary.connectionResets;
      result.failoverMs = summary.maxAckGapMs;
    } catch (err) {
      addError(result, (err as Error).message);
    } finally {
      // The run's real outcome, whatever happened above: each side's word and the wire's.
      pollStop = true;
      await watch;
      if (client && client.exitCode === null) client.kill("SIGKILL");
      const [a, b] = await Promise.all([this.tryStatus(pair.h1), this.tryStatus(pair.h2)]);
      result.outcome = { h1: a ? `${a.state}/${a.replication?.mode ?? "-"}` : "gone", h2: b ? `${b.state}/${b.replication?.mode ?? "-"}` : "gone" };
      result.survivor = live(a) ? (live(b) ? "both" : "h1") : live(b) ? "h2" : "none";
      if (wire) {
        try {
          const end = await wire.read();
          if (wireAtFault && wireAfter) {
            const afterFault = wireDelta(wireAfter, end);
            const sender = wireSender(afterFault);
            result.wire = { beforeFault: wireAtFault, afterFault, sender };
            result.splitBrain = sender === "both";
          }
        } catch (err) {
          addError(result, (err as Error).message);
        }
        await wire.stop();
      }
    }
  }
}
