// Acknowledgements over time: how many per 1-second bucket (ops/s before and
// after a failover) and the longest gap between two consecutive ones (the
// failover time as a client sees it).

export class AckStats {
  private readonly buckets: number[] = [];
  private last: number | null = null;
  private gapMs = 0;
  private gapAtMs = 0;

  /** One acknowledgement at `atMs` (ms since the run started; never decreasing). */
  record(atMs: number): void {
    const bucket = Math.floor(atMs / 1000);
    while (this.buckets.length <= bucket) this.buckets.push(0);
    this.buckets[bucket]! += 1;
    if (this.last !== null && atMs - this.last > this.gapMs) {
      this.gapMs = atMs - this.last;
      this.gapAtMs = this.last;
    }
    this.last = atMs;
  }

  /** Acknowledgements per second; with `untilMs`, zero buckets up to that time are included. */
  opsPerSecond(untilMs?: number): number[] {
    const out = [...this.buckets];
    if (untilMs !== undefined) {
      const lastBucket = Math.ceil(untilMs / 1000) - 1;
      while (out.length <= lastBucket) out.push(0);
    }
    return out;
  }

  /** Longest time between two consecutive acknowledgements, and when it began. */
  get maxGapMs(): number {
    return this.gapMs;
  }

  get maxGapAtMs(): number {
    return this.gapAtMs;
  }

  /** Time of the latest acknowledgement, or null before the first. */
  get lastAckAtMs(): number | null {
    return this.last;
  }
}
