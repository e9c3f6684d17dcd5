/**
 * The status page's data: every live daemon's `status` (the object `colo
 * status` prints), asked once per period whoever looks (viewers never add
 * load on the daemons), and each VM's checkpoint history for the chart.
 * A daemon that does not answer within the bound shows its error until it
 * answers again.
 */
import { monotonicMs, type Clock } from "../sys/clock.js";
import { CheckpointHistory, DEFAULT_HISTORY_WINDOW_MS } from "./checkpoint-history.js";
import { askLiveDaemons, DEFAULT_DAEMON_TIMEOUT_MS } from "./daemons.js";

export interface PollerOptions {
  dir?: string;
  /** How often the daemons are asked (ms). */
  periodMs?: number;
  /** How long one daemon may take to answer (ms). */
  timeoutMs?: number;
  /** How far back the checkpoint history goes (ms). */
  windowMs?: number;
  clock?: Clock;
  /** Told when a poll fails as a whole (the run directory cannot be read). */
  onError?: (message: string) => void;
}

export const DEFAULT_POLL_PERIOD_MS = 1000;
/** A poll waits this long at most for a daemon: under the period, so polls never queue up. */
const DEFAULT_POLL_TIMEOUT_MS = Math.min(DEFAULT_DAEMON_TIMEOUT_MS, 900);

/** One VM as `/api/status` shows it. */
export interface VmView {
  name: string;
  pid: number;
  /** The daemon's status, as the control socket answered it; absent when it did not answer the last poll. */
  status?: unknown;
  /** Why the last poll has no status. */
  error?: string;
  /** Its checkpoints over the window, oldest first. */
  history: ReturnType<CheckpointHistory["view"]>;
}

export interface StatusView {
  /** When this poll ended: an instant for the reader (wall clock, ISO 8601). */
  at: string;
  periodMs: number;
  windowSeconds: number;
  vms: VmView[];
}

export class StatusPoller {
  private readonly periodMs: number;
  private readonly timeoutMs: number;
  private readonly windowMs: number;
  private readonly clock: Clock;
  private readonly histories = new Map<string, { pid: number; history: CheckpointHistory }>();
  private last: { at: string; vms: Omit<VmView, "history">[] } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly opts: PollerOptions = {}) {
    this.periodMs = opts.periodMs ?? DEFAULT_POLL_PERIOD_MS;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_POLL_TIMEOUT_MS;
    this.windowMs = opts.windowMs ?? DEFAULT_HISTORY_WINDOW_MS;
    this.clock = opts.clock ?? monotonicMs;
  }

  /** Polls now, then every period (the next poll starts a period after one ends). */
  start(): void {
    const loop = () => {
      if (this.stopped) return;
      this.poll()
        .catch((err: unknown) => this.opts.onError?.(`status poll failed: ${(err as Error).message}`))
        .finally(() => {
          if (!this.stopped) this.timer = setTimeout(loop, this.periodMs);
        });
    };
    loop();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  /** One poll of every live daemon (a poll already running is joined, not doubled). */
  poll(): Promise<void> {
    this.polling ??= this.pollOnce().finally(() => (this.polling = undefined));
    return this.polling;
  }

  /** The last poll's view; before the first poll has ended, waits for it. */
  async view(): Promise<StatusView> {
    if (!this.last) await this.poll();
    const now = this.clock();
    return {
      // Wall clock (only when no poll has ended): an instant for the reader.
      at: this.last?.at ?? new Date().toISOString(),
      periodMs: this.periodMs,
      windowSeconds: this.windowMs / 1000,
      vms: (this.last?.vms ?? []).map((vm) => ({ ...vm, history: this.histories.get(vm.name)?.history.view(now) ?? [] })),
    };
  }

  private async pollOnce(): Promise<void> {
    const answers = await askLiveDaemons({ op: "status" }, this.timeoutMs, this.opts.dir);
    const now = this.clock();
    const vms: Omit<VmView, "history">[] = [];
    for (const a of answers) {
      let h = this.histories.get(a.name);
      // Another daemon under the same name: its own history.
      if (!h || h.pid !== a.pid) this.histories.set(a.name, (h = { pid: a.pid, history: new CheckpointHistory(this.windowMs) }));
      if (a.ok) {
        h.history.add(a.result, now);
        vms.push({ name: a.name, pid: a.pid, status: a.result });
      } else {
        vms.push({ name: a.name, pid: a.pid, error: a.error });
      }
    }
    const live = new Set(answers.map((a) => a.name));
    for (const name of this.histories.keys()) if (!live.has(name)) this.histories.delete(name);
    // Wall clock: an instant shown to the reader, never compared with another.
    this.last = { at: new Date().toISOString(), vms };
  }
}
