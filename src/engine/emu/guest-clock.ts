/**
 * The emu guest's clock. v86 times its PIT, RTC, APIC and ACPI timers with
 * `performance.now()` (bound once, when v86's module loads), and its saved
 * state holds absolute times of that clock. A state loaded in another
 * process (migration, COLO) would then see timers due far in the past or
 * the future -- the guest gets no timer interrupt until the new process's
 * clock catches up. So the emu engine owns this clock: `performance.now`
 * is replaced, before v86 loads, by the host clock plus an offset that
 * loadState() sets to continue the saved guest time.
 *
 * This module must be imported before "v86" (emu-engine.ts does so first).
 */
const hostNow = performance.now.bind(performance);
let offsetMs = 0;

performance.now = () => hostNow() + offsetMs;

/** The guest clock now (ms); what v86 reads. */
export function guestNow(): number {
  return hostNow() + offsetMs;
}

/** Makes the guest clock read `ms` now: time resumes from a saved state's instant. */
export function setGuestNow(ms: number): void {
  if (!Number.isFinite(ms)) throw new RangeError(`guest clock ${ms} is not a finite number`);
  offsetMs = ms - hostNow();
}
