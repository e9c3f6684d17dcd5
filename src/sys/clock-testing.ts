/**
 * Tests only: a wall clock that jumps. `Date.now()` returns the real wall
 * clock plus the jumps made so far, for the rest of the test `t`; `reads()`
 * counts the calls, so a test can show that code timed on the monotonic
 * clock (clock.ts) never looked at `Date` at all.
 */
import type { TestContext } from "node:test";

export interface SteppedWallClock {
  /** Moves the wall clock by `ms` (negative: back). */
  jump(ms: number): void;
  /** How often `Date.now()` was called since the mock was installed. */
  reads(): number;
}

export function steppedWallClock(t: TestContext): SteppedWallClock {
  const wall = Date.now.bind(Date);
  let offset = 0;
  const mocked = t.mock.method(Date, "now", () => wall() + offset);
  return {
    jump: (ms) => {
      offset += ms;
    },
    reads: () => mocked.mock.callCount(),
  };
}
