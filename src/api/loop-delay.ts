/**
 * How late this daemon's event loop runs (issue 13): heartbeats, lease
 * renewals and the silence watchdog are timers on this loop, so a long
 * synchronous stretch (a page compare, a disk hash, a large write) delays
 * them all. `perf_hooks.monitorEventLoopDelay` samples the loop's lateness;
 * `colo status` shows it (`eventLoopDelay`), bench results record it.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from "node:perf_hooks";
import { monotonicMs } from "../sys/clock.js";

/** Sampling period of the monitor (ms): lateness shorter than this is not seen. */
export const LOOP_DELAY_RESOLUTION_MS = 10;

export interface LoopDelaySnapshot {
  /** The longest the loop ran late since the daemon started (ms beyond the sampling period). */
  maxMs: number;
  p99Ms: number;
  meanMs: number;
  /** Samples taken. */
  samples: number;
  resolutionMs: number;
}

/** A stall at least this long is logged (a quarter of the default peer timeout). */
export const LOOP_STALL_LOG_MS = 250;

export class LoopDelay {
  private readonly h: IntervalHistogram = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
  private readonly watch: NodeJS.Timeout | undefined;

  /** With `onStall`, each stretch of at least `stallMs` the loop did not turn is reported when it ends (to log it). */
  constructor(onStall?: (lateMs: number) => void, stallMs = LOOP_STALL_LOG_MS) {
    this.h.enable();
    if (onStall) {
      const period = 50;
      let last = monotonicMs();
      this.watch = setInterval(() => {
        const now = monotonicMs();
        const late = now - last - period;
        last = now;
        if (late >= stallMs) onStall(Math.round(late));
      }, period);
      this.watch.unref();
    }
  }

  snapshot(): LoopDelaySnapshot {
    // The histogram holds each sampling interval; its lateness is what exceeds the resolution.
    const ms = (ns: number) => Math.max(0, Math.round((ns / 1e6 - LOOP_DELAY_RESOLUTION_MS) * 100) / 100);
    const samples = this.h.count;
    return {
      maxMs: samples > 0 ? ms(this.h.max) : 0,
      p99Ms: samples > 0 ? ms(this.h.percentile(99)) : 0,
      meanMs: samples > 0 ? ms(this.h.mean) : 0,
      samples,
      resolutionMs: LOOP_DELAY_RESOLUTION_MS,
    };
  }

  stop(): void {
    this.h.disable();
    if (this.watch) clearInterval(this.watch);
  }
}
