/**
 * Memory integrity across checkpoints (issue 7 item 4): the guest runs
 * memtester in a loop (`colo.memtest=SIZE`, guest/init.sh; it prints
 * COLO-MEMTEST-PASS n / COLO-MEMTEST-FAIL n ... on its console) while the
 * primary checkpoints into the secondary at least `checkpoints` times
 * (COLO compare mode with a short maximum interval: memtester sends
 * nothing, so every checkpoint is a periodic one and copies the pages
 * memtester rewrote). Then the primary is killed and memtester goes on in
 * the survivor, from the last checkpoint's memory, for more passes. Any
 * FAIL line on either console — or a survivor whose memtester stops —
 * fails the run.
 */
import { join } from "node:path";
import { request } from "../../src/api/control-client.js";
import { vmRunFiles } from "../../src/api/paths.js";
import type { LabTopology } from "../../src/lab/topology.js";
import { writeGuestConfig } from "../tools/guest-fixture.js";
import { Pair, waitFor } from "../tools/pair-fixture.js";

export interface MemtestResult {
  memtestSize: string;
  checkpoints: number;
  checkpointIntervalMs: number;
  primaryPasses: number;
  survivorPassesAfterTakeover: number;
  failures: string[];
  p99PauseMs: number;
  ms: number;
  ok: boolean;
}

/** Why a memtest run failed: empty when it passed (`ok`). */
export function memtestProblems(r: Pick<MemtestResult, "failures" | "primaryPasses" | "survivorPassesAfterTakeover">): string[] {
  const out: string[] = [];
  if (r.failures.length > 0) out.push(`${r.failures.length} memtester FAIL line(s), the first: ${r.failures[0]}`);
  if (r.primaryPasses === 0) out.push("no memtester pass on the primary");
  if (r.survivorPassesAfterTakeover < 2) out.push(`${r.survivorPassesAfterTakeover} memtester pass(es) in the survivor after the takeover, 2 needed`);
  return out;
}

const PASS = /COLO-MEMTEST-PASS (\d+)/g;
const FAIL = /COLO-MEMTEST-FAIL[^\n]*/g;

export async function runMemtest(lab: LabTopology, work: string, keyFile: string, opts: { checkpoints: number; size: string; intervalMs: number; log: (l: string) => void }): Promise<MemtestResult> {
  const t0 = Date.now();
  const runDir = join(work, "run-memtest");
  const pair = new Pair(lab, "mem", runDir, keyFile);
  const console = async (host: string): Promise<string> => {
    const files = vmRunFiles("mem", join(runDir, "netns", host));
    const r = (await request(files.socket, { op: "console-tail", bytes: 65536 }, 10_000)) as { text?: string };
    return r.text ?? "";
  };
  const passes = (text: string) => [...text.matchAll(PASS)].map((m) => Number(m[1]));
  const failures = (text: string) => [...text.matchAll(FAIL)].map((m) => m[0]);
  const cfg = writeGuestConfig({ dir: join(work, "mem"), name: "mem", ip: `${lab.guestIp}/24`, mac: "00:16:3e:4c:00:b0", bridge: lab.hostBridge, extra: `colo.memtest=${opts.size}` }).cfg;
  const found: string[] = [];
  try {
    await pair.protect(cfg, ["migrate", "--colo", "--checkpoint-max-interval", String(opts.intervalMs), "--checkpoint-min-gap", "0"]);
    let checkpoints = 0;
    let lastLog = 0;
    await waitFor(
      `${opts.checkpoints} checkpoints`,
      async () => {
        checkpoints = (await pair.status(pair.h1)).replication?.checkpoints ?? 0;
        if (Date.now() - lastLog > 15_000) {
          lastLog = Date.now();
          opts.log(`memtest: ${checkpoints} checkpoints, primary passes ${passes(await console(pair.h1)).length}`);
        }
        return checkpoints >= opts.checkpoints;
      },
      // A checkpoint takes its interval plus its pause: ~0.1 s on emu, ~1 s on qemu (each load waits for a standby QEMU).
      Math.max(600_000, opts.checkpoints * Math.max(opts.intervalMs * 10, 2000)),
    );
    const primaryText = await console(pair.h1);
    found.push(...failures(primaryText).map((f) => `primary: ${f}`));
    const primaryPasses = passes(primaryText);
    const s = await pair.status(pair.h1);
    process.kill(s.pid, "SIGKILL");
    await waitFor("the secondary takes over", async () => (await pair.status(pair.h2)).replication?.mode === "unprotected", 30_000);
    // Pass numbers continue from the checkpointed memory (the primary's count); the secondary's console also shows its own earlier passes.
    const lastBefore = Math.max(0, ...primaryPasses, ...passes(await console(pair.h2)));
    // Two more passes in the survivor: its memory is the last checkpoint's.
    await waitFor("memtester passes in the survivor", async () => Math.max(0, ...passes(await console(pair.h2))) >= lastBefore + 2 || failures(await console(pair.h2)).length > 0, 600_000);
    const survivorText = await console(pair.h2);
    found.push(...failures(survivorText).map((f) => `survivor: ${f}`));
    const after = new Set(passes(survivorText).filter((n) => n > lastBefore)).size;
    const figures = {
      memtestSize: opts.size,
      checkpoints,
      checkpointIntervalMs: opts.intervalMs,
      primaryPasses: primaryPasses.length,
      survivorPassesAfterTakeover: after,
      failures: found,
      p99PauseMs: (s.replication as { p99PauseMs?: number } | undefined)?.p99PauseMs ?? 0,
      ms: Date.now() - t0,
    };
    return { ...figures, ok: memtestProblems(figures).length === 0 };
  } finally {
    await pair.destroyAll();
  }
}
