/**
 * How long QEMU's vCPUs stood still in the last pause (Engine.lastStoppedMs),
 * from the timestamps of QEMU's own STOP and RESUME events: the pause
 * without the time our `stop` and `cont` requests took to be answered.
 * QEMU sends each event before the reply to the command that caused it, so
 * the figure is known when resume() returns.
 *
 * A RESUME is timed only against a STOP of the same QEMU process: a standby
 * made current by a load started paused (no STOP of its own), and another
 * process's clock is not this one's. QEMU stamps events with its real-time
 * clock: a step of that clock between the two events shows as no figure.
 */
import type { QmpEvent } from "./qmp-wire.js";

/** Longer than any pause: a difference past it is a step of QEMU's clock. */
const MAX_PLAUSIBLE_US = 3_600_000_000;

/** A QMP event's timestamp in µs (QEMU's real-time clock). */
export function eventMicros(event: QmpEvent): number {
  return event.timestamp.seconds * 1_000_000 + event.timestamp.microseconds;
}

export class VcpuStopTimer<P> {
  private stoppedAt: { process: P; us: number } | undefined;
  private last: number | undefined;

  /** A pause is asked for: no figure until its RESUME. */
  pausing(): void {
    this.last = undefined;
  }

  /** The current QEMU `process` sent STOP. */
  stopped(process: P, event: QmpEvent): void {
    this.stoppedAt = { process, us: eventMicros(event) };
  }

  /** The current QEMU `process` sent RESUME. */
  resumed(process: P, event: QmpEvent): void {
    const stopped = this.stoppedAt;
    this.stoppedAt = undefined;
    const us = eventMicros(event) - (stopped?.process === process ? stopped.us : NaN);
    this.last = Number.isFinite(us) && us >= 0 && us < MAX_PLAUSIBLE_US ? us / 1000 : undefined;
  }

  /** The last pause's length in ms, or undefined. */
  lastMs(): number | undefined {
    return this.last;
  }
}
