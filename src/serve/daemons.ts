/**
 * Asks every live VM daemon of this host one control request, in parallel,
 * each within a bound: a daemon that does not answer in time (stalled, or
 * gone meanwhile) is reported as such, never waited for.
 */
import { ControlError, request } from "../api/control-client.js";
import { runDir, vmRunFiles } from "../api/paths.js";
import type { ControlRequest } from "../api/protocol.js";
import { liveVms } from "../api/registry.js";

/** Why a daemon gave no usable answer: the control client's codes, and BAD_ANSWER for an answer that is not what was asked for. */
export type DaemonErrorCode = ControlError["code"] | "BAD_ANSWER";

export type DaemonAnswer =
  | { name: string; pid: number; ok: true; result: unknown }
  | { name: string; pid: number; ok: false; code: DaemonErrorCode; error: string };

/** `colo serve`'s bound on one daemon's answer (ms): a scrape or a status poll waits no longer for any daemon. */
export const DEFAULT_DAEMON_TIMEOUT_MS = 2000;

/** Resolves with `fallback()` if `p` has not settled within `ms` (a timer: Node's timers run on the monotonic clock). */
function within<T>(p: Promise<T>, ms: number, fallback: () => T): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => resolve(fallback()), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

/** Sends `req` to each live daemon under `dir` (their order: by VM name); each answer within `timeoutMs`. */
export async function askLiveDaemons(req: ControlRequest, timeoutMs: number, dir = runDir()): Promise<DaemonAnswer[]> {
  return Promise.all(
    liveVms(dir).map(async ({ name, pid }): Promise<DaemonAnswer> => {
      const timedOut = (): DaemonAnswer => ({ name, pid, ok: false, code: "TIMEOUT", error: `${name}: no answer within ${timeoutMs} ms` });
      try {
        // The client's own timeout bounds the connect and each line; `within` bounds the whole.
        const asked = request(vmRunFiles(name, dir).socket, req, timeoutMs).then((result): DaemonAnswer => ({ name, pid, ok: true, result }));
        return await within(asked, timeoutMs, timedOut);
      } catch (err) {
        if (err instanceof ControlError) return err.code === "TIMEOUT" ? timedOut() : { name, pid, ok: false, code: err.code, error: `${name}: ${err.message}` };
        return { name, pid, ok: false, code: "UNREACHABLE", error: `${name}: ${(err as Error).message}` };
      }
    }),
  );
}
