import { isDaemonAlive } from "../api/registry.js";

/**
 * Waits until a process we signalled is gone. A process that is not our
 * child cannot be awaited by an event, so this polls its /proc entry.
 */
export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isDaemonAlive(pid)) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return !isDaemonAlive(pid);
}
