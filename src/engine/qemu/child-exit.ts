/** The end of a child process: reaped, and its output drained (bounded). */
import type { ChildProcess } from "node:child_process";

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the process could not be spawned at all. */
  spawnError?: Error;
}

/**
 * How long after the exit its pipes may stay open: a grandchild (an
 * `exec:` migration's shell) can hold them; we stop reading then.
 */
const DRAIN_AFTER_EXIT_MS = 200;

/** Resolves once, when `child` has been reaped and its output read (or given up on). */
export function waitForChild(child: ChildProcess): Promise<ChildExit> {
  return new Promise((resolve) => {
    let exit: ChildExit | undefined;
    let drainTimer: NodeJS.Timeout | undefined;
    const done = (e: ChildExit): void => {
      clearTimeout(drainTimer);
      resolve(e);
    };
    child.once("exit", (code, signal) => {
      exit = { code, signal };
      const reaped = exit;
      drainTimer = setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
        done(reaped);
      }, DRAIN_AFTER_EXIT_MS);
    });
    child.once("close", (code: number | null, signal: NodeJS.Signals | null) => done(exit ?? { code, signal }));
    child.on("error", (err) => {
      // 'error' without a pid: the spawn failed and no 'exit' will come.
      if (child.pid === undefined) done({ code: null, signal: null, spawnError: err });
    });
  });
}
