import { processEnded } from "../api/registry.js";
import { monotonicMs } from "../sys/clock.js";

/**
 * Waits until a process we signalled has ended (gone or a zombie). A process that is not our
 * child cannot be awaited by an event, so this polls its /proc entry.
 */
export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = monotonicMs() + timeoutMs;
  while (monotonicMs() < deadline) {
    if (processEnded(pid)) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return processEnded(pid);
}
