/**
 * The last N durations of something (ms), a ring, and their summary: what
 * `colo status` shows as `holdMs` and `responseMs`.
 */
export interface LatencySummary {
  samples: number;
  p50: number;
  p99: number;
  max: number;
}

export class LatencySamples {
  private readonly ring: number[] = [];
  private next = 0;

  constructor(private readonly capacity = 1024) {}

  record(ms: number): void {
    this.ring[this.next] = ms;
    this.next = (this.next + 1) % this.capacity;
  }

  /** Percentiles of the samples kept, to the microsecond; zeros when there is none. */
  summary(): LatencySummary {
    if (this.ring.length === 0) return { samples: 0, p50: 0, p99: 0, max: 0 };
    const sorted = [...this.ring].sort((a, b) => a - b);
    const round = (v: number) => Math.round(v * 1000) / 1000;
    const at = (q: number) => round(sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))] ?? 0);
    return { samples: sorted.length, p50: at(0.5), p99: at(0.99), max: round(sorted[sorted.length - 1] ?? 0) };
  }
}
