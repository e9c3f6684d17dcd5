/**
 * Steps the bench scripts share on a lab pair: ending a protected session,
 * the request count of a Remus run, a plain migration's receiver and the
 * figures `colo migrate` prints.
 */
import { spawn } from "node:child_process";
import { COLO_BIN, type RunResult } from "../test/tools/run.js";

/** Runs `colo ARGS` in a lab host's namespace (the bench's own COLO_RUN_DIR). */
export type ColoRunner = (host: string, args: string[]) => Promise<RunResult>;

/**
 * Ends a protected session in order: `colo failover NAME` on the primary
 * (the secondary discards its copy and exits; the primary runs on
 * unprotected), then waits (up to 10 s) until the secondary's host lists no
 * VM, so the next session can start there.
 */
export async function endSession(colo: ColoRunner, primaryHost: string, secondaryHost: string, name: string): Promise<void> {
  const r = await colo(primaryHost, ["failover", name]);
  if (r.code !== 0) throw new Error(`failover (orderly end): ${r.stderr.trim()}`);
  for (let i = 0; i < 100; i++) {
    const l = await colo(secondaryHost, ["list", "--json"]);
    if ((JSON.parse(l.stdout) as unknown[]).length === 0) break;
    await new Promise((res) => setTimeout(res, 100));
  }
}

/**
 * Requests per redis-benchmark test in Remus mode: a reply waits for the
 * next checkpoint, so one client does about 1000/interval ops/s; the count
 * is scaled so a test stays bounded (about 20 s at most), never above
 * `requests` nor below 20.
 */
export function remusRequestsPerTest(requests: number, intervalMs: number, clients: number): number {
  return Math.min(requests, Math.max(20, Math.floor((20_000 / intervalMs) * clients)));
}

/**
 * `colo migrate-receive` (a plain live migration's destination) on `host`;
 * resolves once it listens. `closed` resolves when it exits (after the
 * migration came in, or at its timeout); `kill` ends it (a migration that
 * failed at the source).
 */
export async function startMigrateReceive(opts: {
  env: NodeJS.ProcessEnv;
  host: string;
  listenIp: string;
  keyFile: string;
  timeoutS?: number;
}): Promise<{ closed: Promise<number | null>; kill: () => void }> {
  const recv = spawn("ip", ["netns", "exec", opts.host, COLO_BIN, "migrate-receive", "--listen", opts.listenIp, "--key-file", opts.keyFile, "--timeout", String(opts.timeoutS ?? 120)], {
    env: opts.env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const closed = new Promise<number | null>((resolve) => recv.on("close", (code) => resolve(code)));
  let out = "";
  let err = "";
  recv.stderr.on("data", (c: Buffer) => (err += c.toString()));
  await new Promise<void>((resolve, reject) => {
    recv.stdout.on("data", (c: Buffer) => {
      out += c.toString();
      if (out.includes("listening on")) resolve();
    });
    void closed.then((code) => reject(new Error(`migrate-receive ended early (${code}): ${out} ${err}`.trim())));
  });
  return { closed, kill: () => void recv.kill("SIGTERM") };
}

export interface MigrationFigure {
  load: "idle" | "redis-benchmark";
  totalMs: number;
  /** The source's final pause to the destination's answer. */
  downtimeMs: number;
  rounds: number;
  round0MBps: number;
  round0PagesPerSec: number;
  finalPages: number;
  wireMiB: number;
}

/** The figures of a live migration from `colo migrate`'s output. */
export function parseMigrate(stdout: string, load: MigrationFigure["load"]): MigrationFigure {
  const done = /migrated to \S+ in (\d+) ms \((\d+) rounds, (\d+) pages, ([\d.]+) MiB\); downtime (\d+) ms/.exec(stdout);
  const r0 = /round 0: \d+ pages \(\d+ zero\), [\d.]+ MiB at ([\d.]+) MB\/s, (\d+) pages\/s/.exec(stdout);
  const fin = /round \d+ \(final, guest paused\): (\d+) pages/.exec(stdout);
  if (!done || !r0 || !fin) throw new Error(`cannot read colo migrate's output: ${stdout}`);
  return {
    load,
    totalMs: Number(done[1]),
    rounds: Number(done[2]),
    wireMiB: Number(done[4]),
    downtimeMs: Number(done[5]),
    round0MBps: Number(r0[1]),
    round0PagesPerSec: Number(r0[2]),
    finalPages: Number(fin[1]),
  };
}
