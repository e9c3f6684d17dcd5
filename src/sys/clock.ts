/**
 * The host's monotonic clock: what every timeout, deadline, lease, watchdog,
 * heartbeat age, pause, duration and rate in src/ measures with.
 *
 * CLOCK_MONOTONIC (through `process.hrtime`): a step of the wall clock (NTP,
 * an operator, `date -s`) does not move it, and neither does any guest (the
 * emu guest's clock is v86's own: src/engine/emu/guest-clock.ts). Its origin
 * is arbitrary and differs between hosts: compare a reading only with
 * readings of the same host, and never send one to another host as an
 * instant (a lease is a duration, counted by each side on its own clock).
 *
 * `Date.now()` stays for instants a human reads (log lines, `startedAt`
 * fields, file names), each marked where it is used.
 *
 * Imports nothing: every src/ folder may import this file (directly, not
 * through index.ts, which loads koffi).
 */

/** A clock in milliseconds; classes that time things take one, defaulting to `monotonicMs` (tests pass their own). */
export type Clock = () => number;

/** Milliseconds of the host's monotonic clock, to the microsecond. */
export const monotonicMs: Clock = () => Number(process.hrtime.bigint() / 1000n) / 1000;

/** Whole milliseconds since `start` (a reading of `monotonicMs`): durations for logs, status and answers. */
export function elapsedMs(start: number): number {
  return Math.round(monotonicMs() - start);
}
