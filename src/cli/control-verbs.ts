import { request } from "../api/control-client.js";
import { vmRunFiles } from "../api/paths.js";
import { findVm, liveVms, removeStale } from "../api/registry.js";
import { fail } from "./output.js";
import { waitForExit } from "./wait.js";

function requireVm(name: string) {
  const record = findVm(name);
  if (!record) fail(`no VM named ${name} is running (see colo list)`);
  return record;
}

export async function pauseVm(name: string): Promise<void> {
  requireVm(name);
  await request(vmRunFiles(name).socket, { op: "pause" });
}

export async function unpauseVm(name: string, force = false): Promise<void> {
  requireVm(name);
  await request(vmRunFiles(name).socket, force ? { op: "unpause", force } : { op: "unpause" });
}

/** Asks the daemon to destroy its VM; if it does not go within 15 s, SIGKILL by pid. */
export async function destroyVm(name: string): Promise<void> {
  const record = requireVm(name);
  try {
    await request(vmRunFiles(name).socket, { op: "destroy" }, 10_000);
  } catch {
    process.kill(record.pid, "SIGTERM");
  }
  if (!(await waitForExit(record.pid, 15_000))) {
    process.kill(record.pid, "SIGKILL");
    await waitForExit(record.pid, 5_000);
  }
  removeStale(name);
}

export async function statusVm(name: string): Promise<unknown> {
  requireVm(name);
  return request(vmRunFiles(name).socket, { op: "status" });
}

interface StatusLike {
  state?: string;
  memoryMiB?: number;
  uptimeMs?: number;
  tap?: string;
}

/** `colo list`: like `xl list`, one line per live VM. */
export async function listVms(json: boolean): Promise<void> {
  const rows: { name: string; pid: number; state: string; mem: number | string; uptime: string; netns: string; tap: string }[] = [];
  for (const r of liveVms()) {
    let s: StatusLike = {};
    try {
      s = (await request(vmRunFiles(r.name).socket, { op: "status" }, 3000)) as StatusLike;
    } catch {
      s = { state: "unresponsive" };
    }
    rows.push({
      name: r.name,
      pid: r.pid,
      state: s.state ?? "?",
      mem: s.memoryMiB ?? "-",
      uptime: s.uptimeMs !== undefined ? `${(s.uptimeMs / 1000).toFixed(0)}s` : "-",
      netns: r.netns ?? "-",
      tap: s.tap ?? "-",
    });
  }
  if (json) {
    process.stdout.write(JSON.stringify(rows, null, 2) + "\n");
    return;
  }
  const header = ["Name", "PID", "Mem(MiB)", "State", "Uptime", "Netns", "TAP"];
  const lines = [header, ...rows.map((r) => [r.name, String(r.pid), String(r.mem), r.state, r.uptime, r.netns, r.tap])];
  const widths = header.map((_, i) => Math.max(...lines.map((l) => (l[i] ?? "").length)));
  for (const l of lines) process.stdout.write(l.map((c, i) => c.padEnd(widths[i] ?? 0)).join("  ").trimEnd() + "\n");
}
