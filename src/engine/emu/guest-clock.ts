/**
 * The emu guest's clock. v86 times its PIT, RTC, APIC and ACPI timers (and
 * the guest's TSC) with one function, `v86.microtick`, which libv86.mjs binds
 * once, while its module evaluates: `microtick = performance.now.bind(performance)`
 * (its only other `performance.now` call is in a modem UART we do not use).
 * Its saved state holds absolute times of that clock. A state loaded in
 * another process (migration, COLO) would then see timers due far in the
 * past or the future -- the guest gets no timer interrupt until the new
 * process's clock catches up. So the emu engine owns this clock: the host's
 * clock plus an offset that loadState() sets to continue the saved guest time.
 *
 * It is v86's clock, not the process's: `performance.now` reads the guest
 * clock only while v86's module evaluates. emu-engine.ts imports, in this
 * order (ESM evaluates a module's imports in order, each module once):
 *   1. this module: `performance.now` becomes the guest clock;
 *   2. "v86": binds `microtick` to it, for good;
 *   3. ./v86-clock-bound.js: calls restoreHostClock(), so `performance.now`
 *      is the host's own again for the rest of the process.
 * Nothing else imports "v86" as a value (v86-internals.ts imports its types
 * only, which the compiler erases) or v86-clock-bound.js. A module that
 * imports this one earlier (a test) only installs the guest clock sooner:
 * it stays until step 3.
 */

/** performance.now as the host has it (an own property only if someone set one before us). */
const hostDescriptor = Object.getOwnPropertyDescriptor(performance, "now");
const hostNow = performance.now.bind(performance);
let offsetMs = 0;
let installed = true;

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

/** Gives the process the host's `performance.now` back (once v86 has bound the guest clock; step 3 above). */
export function restoreHostClock(): void {
  if (!installed) throw new Error("internal: the host's performance.now was restored twice (guest-clock.ts)");
  installed = false;
  if (hostDescriptor) Object.defineProperty(performance, "now", hostDescriptor);
  else Reflect.deleteProperty(performance, "now");
}
