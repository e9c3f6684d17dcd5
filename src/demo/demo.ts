/**
 * `colo demo` (issue 7): the whole mission in one command. It brings up a
 * lab, protects a Redis guest in COLO compare mode with disk replication
 * and an arbiter, drives redis-benchmark and the verifying client from the
 * client namespace, kills the primary host at a random moment, shows the
 * takeover live, verifies every acknowledged write against the survivor,
 * prints a report, and cleans up. Exit code 1 if a write was lost.
 *
 * Everything runs as child processes of the `colo` command (one daemon per
 * VM, in the lab's host namespaces), as an operator would run it.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { generateKeyFile } from "../channel/key.js";
import { labDown, labUp } from "../lab/lab.js";
import { labTopology } from "../lab/topology.js";
import { createDataDisk } from "../../guest/mkdisk.js";
import type { EngineName } from "../config/engines.js";
import { demoGuest } from "./demo-guest.js";
import { elapsedMs, monotonicMs } from "../sys/clock.js";

const REPO = fileURLToPath(new URL("../../../", import.meta.url));
const COLO = join(REPO, "bin/colo");
const NAME = "demo";

export interface DemoOptions {
  /** Seconds of load before the primary host dies: a random moment in [min, max]. */
  killAfterMinS: number;
  killAfterMaxS: number;
  /** Seconds the survivor serves after the takeover before the client stops. */
  afterS: number;
  /** The engine both VMs run on. */
  engine: EngineName;
  write: (text: string) => void;
}

interface Status {
  pid: number;
  state: string;
  replication?: {
    mode: string;
    checkpoints: number;
    lastPauseMs: number;
    checkpointReasons?: Record<string, number>;
    failovers: { at: string; reason: string }[];
  };
  heldOutput?: { heldFrames?: number; releasedMatched?: number };
  /** `--reprotect` (src/api/daemon-reprotect.ts): the start's figures once protected again. */
  reprotect?: { state: string; attempts: number; started?: { start?: { pauseMs: number; disk: { chunksCopied: number; bytesCopied: number } } } };
}

interface ClientSummary {
  acknowledged: number;
  verified: number;
  lostCount: number;
  lost: { key: string }[];
  unacknowledged: number;
  connectionResets: number;
  maxAckGapMs: number;
  maxAckGapAtMs: number;
  opsPerSecond: number[];
  incr: { acknowledged: number; violations: number };
}

function exec(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 300_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    c.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    c.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => c.kill("SIGKILL"), timeoutMs);
    c.on("error", reject);
    c.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runDemo(o: DemoOptions): Promise<number> {
  if (process.getuid?.() !== 0) throw new Error("colo demo needs root (network namespaces, TAP devices)");
  const guest = demoGuest(o.engine);
  if (!existsSync(guest.initrd) || !existsSync(guest.kernel)) throw new Error(`no guest image for engine ${o.engine} (${guest.initrd}): run \`colo image build\` first (scripts/demo.sh does)`);
  const lab = labTopology("cdemo");
  const [h1, h2] = lab.hosts;
  const client = lab.namespaces.client;
  const work = mkdtempSync(join(tmpdir(), "colo-demo-"));
  const env = { ...process.env, COLO_RUN_DIR: join(work, "run") };
  const colo = (ns: string, args: string[], timeoutMs?: number) => exec("ip", ["netns", "exec", ns, COLO, ...args], env, timeoutMs);
  const must = async (what: string, p: ReturnType<typeof colo>) => {
    const r = await p;
    if (r.code !== 0) throw new Error(`${what}: ${r.stderr.trim() || r.stdout.trim()}`);
    return r.stdout;
  };
  const status = async (ns: string): Promise<Status | undefined> => {
    const r = await colo(ns, ["status", NAME], 10_000);
    return r.code === 0 ? (JSON.parse(r.stdout) as Status) : undefined;
  };
  const say = (line: string) => o.write(line + "\n");
  const children: ChildProcess[] = [];
  let clearProgress = () => undefined as void;
  try {
    say(`demo: lab ${lab.prefix} (LAN ${lab.lanSubnet}, replication link ${lab.replSubnet}, arbiter ${lab.arbiterIp})`);
    say(`demo: engine ${o.engine}, ${guest.memoryMiB} MiB guest (${guest.kernel})`);
    await labUp({ prefix: lab.prefix });
    const key = join(work, "colo.key");
    generateKeyFile(key);

    // Disks: the primary's image, and the secondary's own copy (taken before the primary boots: it will differ and be synced).
    const pImg = join(work, "primary.img");
    const sImg = join(work, "secondary.img");
    await createDataDisk(pImg, 64);
    copyFileSync(pImg, sImg);
    const cfg = (dir: string, img: string) => {
      mkdirSync(dir, { recursive: true });
      const path = join(dir, `${NAME}.cfg`);
      writeFileSync(
        path,
        [
          `name = "${NAME}"`,
          `memory = ${guest.memoryMiB}`,
          ...guest.engineLines,
          `kernel = "${guest.kernel}"`,
          `ramdisk = "${guest.initrd}"`,
          `extra = "console=ttyS0 quiet colo.appendfsync=always"`,
          `disk = [ 'format=raw, vdev=hda, access=rw, target=${img}' ]`,
          `vif = [ 'mac=00:16:3e:4c:00:10, bridge=${lab.hostBridge}, ip=${lab.guestIp}/24' ]`,
          "",
        ].join("\n"),
      );
      return path;
    };
    const pCfg = cfg(join(work, "h1"), pImg);
    const sCfg = cfg(join(work, "h2"), sImg);

    const arbiter = spawn("ip", ["netns", "exec", lab.namespaces.lan, COLO, "arbiter", "--listen", lab.arbiterIp, "--key-file", key], { env, stdio: ["ignore", "pipe", "pipe"] });
    children.push(arbiter);
    await new Promise<void>((resolve, reject) => {
      arbiter.stdout?.on("data", (d: Buffer) => d.toString().includes("arbiter listening") && resolve());
      arbiter.on("close", (code) => reject(new Error(`colo arbiter exited ${code}`)));
    });
    say(`demo: arbiter on ${lab.arbiterIp} (a side acts alone only with its lease)`);

    say(`demo: booting the guest on ${h1} (Redis, AOF appendfsync=always on a 64 MiB data disk)...`);
    say("      " + (await must("colo create", colo(h1, ["create", pCfg]))).trim());
    // --reprotect: once it took over, h2 asks h1 for a new secondary by itself (h1 running it with its old image).
    await must(
      "colo migrate-receive --colo",
      colo(h2, ["migrate-receive", "--colo", "--listen", lab.replIps[1], "--key-file", key, "--detach", "--arbiter", lab.arbiterIp, "--reprotect", lab.replIps[0], "--reprotect-config", pCfg]),
    );
    const t0 = monotonicMs();
    const protect = await must("colo migrate --colo", colo(h1, ["migrate", "--colo", NAME, lab.replIps[1], "--key-file", key, "-C", sCfg, "--arbiter", lab.arbiterIp]));
    say("      " + protect.trim() + ` (${elapsedMs(t0)} ms)`);

    // Load: redis-benchmark (bounded) and the verifying client (2 connections).
    const bench = spawn("ip", ["netns", "exec", client, "redis-benchmark", "-h", lab.guestIp, "-t", "set,get", "-n", "1000000", "-c", "8", "-q"], { stdio: "ignore" });
    children.push(bench);
    const vc = spawn(
      "ip",
      ["netns", "exec", client, process.execPath, join(REPO, "dist/src/demo/verify-client.js"), "--host", lab.guestIp, "--connections", "2", "--seconds", "600", "--verify-only-after-stdin"],
      { stdio: ["pipe", "pipe", "pipe"] },
    );
    children.push(vc);
    let clientOut = "";
    let clientProgress = "";
    vc.stdout?.on("data", (d: Buffer) => (clientOut += d.toString()));
    vc.stderr?.on("data", (d: Buffer) => {
      const lines = d.toString().trim().split("\n");
      clientProgress = lines[lines.length - 1] ?? clientProgress;
    });
    const clientDone = new Promise<number | null>((resolve) => vc.on("close", (code) => resolve(code)));
    const clientStart = monotonicMs();
    say(`demo: load from ${client}: redis-benchmark (8 clients, SET/GET) + verifying client (2 connections, SET + INCR)`);

    // Live progress line.
    let last: Status | undefined;
    let progressOn = true;
    const tty = process.stdout.isTTY === true;
    const progress = (async () => {
      while (progressOn) {
        const [p, s] = await Promise.all([status(h1), status(h2)]);
        if (p) last = p;
        const r = p?.replication;
        const reasons = Object.entries(r?.checkpointReasons ?? {})
          .filter(([, v]) => v > 0)
          .map(([k, v]) => `${k} ${v}`)
          .join(", ");
        const line =
          `  [${((monotonicMs() - clientStart) / 1000).toFixed(0).padStart(3)} s] ` +
          (p ? `${h1}: ${r?.mode ?? p.state}, ${r?.checkpoints ?? 0} checkpoints${reasons ? ` (${reasons})` : ""}, held ${p.heldOutput?.heldFrames ?? 0} frames, last pause ${r?.lastPauseMs ?? 0} ms` : `${h1}: down`) +
          ` | ${h2}: ${s ? `${s.replication?.mode ?? s.state} (${s.state})` : "down"}` +
          (clientProgress ? ` | client: ${clientProgress.replace(/^verify-client: \d+s /, "").replace(/ timeouts.*$/, "")}` : "");
        o.write(tty ? `\r${line.padEnd(150).slice(0, 150)}` : line + "\n");
        await sleep(tty ? 500 : 2000);
      }
    })();
    clearProgress = () => {
      if (tty) o.write("\n");
    };

    const killAfter = (o.killAfterMinS + Math.random() * (o.killAfterMaxS - o.killAfterMinS)) * 1000;
    await sleep(killAfter);
    const before = last;
    const victim = await status(h1);
    if (!victim) throw new Error(`the primary on ${h1} is not answering before the fault`);
    const killedAt = monotonicMs();
    process.kill(victim.pid, "SIGKILL");
    clearProgress();
    say(`demo: *** host ${h1} dies: SIGKILL of the primary (pid ${victim.pid}) at ${((killedAt - clientStart) / 1000).toFixed(1)} s ***`);
    let takeoverMs = -1;
    while (monotonicMs() - killedAt < 30_000) {
      const s = await status(h2);
      if (s?.replication?.mode === "unprotected") {
        takeoverMs = elapsedMs(killedAt);
        say(`demo: ${h2} took over ${takeoverMs} ms after the kill (${s.replication.failovers[0]?.reason ?? ""})`);
        break;
      }
      await sleep(50);
    }
    if (takeoverMs < 0) throw new Error(`${h2} did not take over within 30 s`);
    await sleep(o.afterS * 1000);

    // The dead host comes back as a secondary, with its old image: the survivor protects itself again.
    clearProgress();
    say(`demo: host ${h1} is back: colo migrate-receive --colo with its old image; ${h2} protects itself again (--reprotect)...`);
    const backAt = monotonicMs();
    await must("colo migrate-receive --colo on the returning host", colo(h1, ["migrate-receive", "--colo", "--listen", lab.replIps[0], "--key-file", key, "--detach", "--arbiter", lab.arbiterIp]));
    let again: Status | undefined;
    while (monotonicMs() - backAt < 300_000) {
      const s = await status(h2);
      // The mode says primary from the session's first byte; the attempt is done once checkpoint 0 is on h1.
      if (s?.replication?.mode === "primary" && s.reprotect?.state === "protected") {
        again = s;
        break;
      }
      await sleep(250);
    }
    if (!again) throw new Error(`${h2} was not protected again within 300 s: ${JSON.stringify((await status(h2))?.reprotect ?? {})}`);
    const reprotectMs = elapsedMs(backAt);
    const protectedAgainAt = monotonicMs();
    say(`demo: ${h2} -> ${h1} replicating again, ${reprotectMs} ms after ${h1} listened`);
    await sleep(o.afterS * 1000);
    progressOn = false;
    await progress;
    clearProgress();
    bench.kill("SIGTERM");
    vc.stdin?.end();
    say("demo: stopping the client and verifying every acknowledged write against the survivor...");
    await Promise.race([clientDone, sleep(180_000)]);
    const summary = JSON.parse(clientOut) as ClientSummary;

    const killS = Math.floor((killedAt - clientStart) / 1000);
    const rate = (xs: number[]) => (xs.length ? Math.round(xs.reduce((a, b) => a + b, 0) / xs.length) : 0);
    // The last 5 s before the fault (the first seconds after checkpoint 0 are a warm-up: the secondary's JIT starts cold).
    const beforeOps = rate(summary.opsPerSecond.slice(Math.max(1, killS - 5), killS));
    const backS = Math.floor((backAt - clientStart) / 1000);
    const afterOps = rate(summary.opsPerSecond.slice(killS + Math.ceil(summary.maxAckGapMs / 1000) + 1, backS));
    const againOps = rate(summary.opsPerSecond.slice(Math.ceil((protectedAgainAt - clientStart) / 1000) + 1, -1));
    const start = again.reprotect?.started?.start;
    const reasons = before?.replication?.checkpointReasons ?? {};
    say("");
    say("demo report");
    say(`  protected by:        COLO compare mode + disk replication + arbiter lease (${h1} -> ${h2})`);
    const byReason = Object.entries(reasons).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v}`).join(", ");
    say(`  checkpoints:         ${Math.max(0, (before?.replication?.checkpoints ?? 1) - 1)} after the initial sync, before the fault${byReason ? ` (by reason: ${byReason})` : " (outputs never diverged)"}; last pause ${before?.replication?.lastPauseMs ?? 0} ms`);
    say(`  replies by compare:  ${before?.heldOutput?.releasedMatched ?? 0} frames released because both VMs sent them`);
    say(`  client ops/s:        ${beforeOps} in the 5 s before the fault (protected), ${afterOps} after the takeover (unprotected) — verifying client, 2 connections, beside redis-benchmark`);
    say(`  failover:            takeover ${takeoverMs} ms after the kill (detection included); longest gap seen by the client ${summary.maxAckGapMs} ms`);
    say(`  writes:              ${summary.acknowledged} SETs + ${summary.incr.acknowledged} INCRs acknowledged; ${summary.verified} SETs verified on the survivor; ${summary.lostCount} lost; INCR violations ${summary.incr.violations}`);
    say(`  connection resets:   ${summary.connectionResets} (unacknowledged commands when the primary died: ${summary.unacknowledged})`);
    say(
      `  protected again:     ${h2} -> ${h1} by itself (--reprotect), ${reprotectMs} ms after ${h1} listened` +
        (start ? `; checkpoint 0 paused the guest ${start.pauseMs} ms; disk: ${start.disk.chunksCopied} chunks (${(start.disk.bytesCopied / 2 ** 20).toFixed(1)} MiB) copied, the ones that differed` : ""),
    );
    say(`  client ops/s again:  ${againOps} protected again (${h2} -> ${h1})`);
    const [h2Now, h1Now] = await Promise.all([status(h2), status(h1)]);
    say(`  pair now:            ${h2} ${h2Now?.replication?.mode ?? "down"}, ${h1} ${h1Now?.replication?.mode ?? "down"}`);
    const lost = summary.lostCount + summary.incr.violations;
    say(lost === 0 ? "demo: PASS: no acknowledged write lost" : `demo: FAIL: ${lost} acknowledged writes lost: ${summary.lost.map((l) => l.key).join(" ")}`);
    return lost === 0 ? 0 : 1;
  } finally {
    clearProgress();
    for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
    for (const h of lab.hosts) await colo(h, ["destroy", NAME], 30_000).catch(() => undefined);
    await labDown({ prefix: lab.prefix }).catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
    say("demo: cleaned up (VMs, arbiter, lab, files)");
  }
}
