/**
 * The status page's chart data: a VM's checkpoints over the last minutes,
 * gathered from its status answers' `recentCheckpoints` (the last 20,
 * each with `msAgo`), deduplicated, and placed on this process's monotonic
 * clock (received at, less `msAgo`). Polled every second, the last 20 cover
 * every checkpoint while there are fewer than 20 a second (the policy's
 * minimum gap allows 10). Pure: the caller gives the time.
 */

export interface HistoryPoint {
  checkpoint: number;
  reason?: string;
  pauseMs: number;
  pages: number;
  /** When it completed, on the caller's monotonic clock (ms). */
  completedAt: number;
}

/** How long the page's chart looks back. */
export const DEFAULT_HISTORY_WINDOW_MS = 10 * 60_000;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export class CheckpointHistory {
  private points: (HistoryPoint & { key: string })[] = [];
  /** Checkpoints already taken: number and wall-clock `at` (a new session numbers from 0 again). */
  private readonly seen = new Set<string>();

  constructor(private readonly windowMs = DEFAULT_HISTORY_WINDOW_MS) {}

  /** Adds the checkpoints of one status answer (`status.replication.recentCheckpoints`) received at `nowMs`. */
  add(status: unknown, nowMs: number): void {
    const replication = isObject(status) ? status.replication : undefined;
    const recent = isObject(replication) ? replication.recentCheckpoints : undefined;
    if (Array.isArray(recent)) {
      for (const r of recent) {
        if (!isObject(r)) continue;
        const { checkpoint, pauseMs, pages, msAgo, at, reason } = r;
        if (typeof checkpoint !== "number" || typeof pauseMs !== "number" || typeof pages !== "number" || typeof msAgo !== "number" || typeof at !== "string") continue;
        const key = `${checkpoint}@${at}`;
        if (this.seen.has(key)) continue;
        this.seen.add(key);
        this.points.push({ key, checkpoint, ...(typeof reason === "string" ? { reason } : {}), pauseMs, pages, completedAt: nowMs - msAgo });
      }
      this.points.sort((a, b) => a.completedAt - b.completedAt);
    }
    this.trim(nowMs);
  }

  /** The checkpoints of the window, oldest first, each with how long before `nowMs` it completed (s). */
  view(nowMs: number): (Omit<HistoryPoint, "completedAt"> & { secondsAgo: number })[] {
    this.trim(nowMs);
    return this.points.map(({ completedAt, key: _key, ...p }) => ({ ...p, secondsAgo: Math.round((nowMs - completedAt) / 100) / 10 }));
  }

  private trim(nowMs: number): void {
    const from = nowMs - this.windowMs;
    let drop = 0;
    while (drop < this.points.length && (this.points[drop]?.completedAt ?? 0) < from) drop++;
    if (drop === 0) return;
    // Forget their keys too (one still in a status answer is added and dropped again at once).
    for (const p of this.points.slice(0, drop)) this.seen.delete(p.key);
    this.points = this.points.slice(drop);
  }
}
