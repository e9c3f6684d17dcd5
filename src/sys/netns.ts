/**
 * Running a synchronous piece of code with the calling thread inside a named
 * network namespace (one made by `ip netns add NAME`, bound at
 * /run/netns/NAME), then returning to the thread's own namespace.
 *
 * Linux network namespaces are per thread: setns(CLONE_NEWNET) moves only
 * the calling (main) thread, and only for the duration of `fn`. Sockets and
 * TAP devices opened inside `fn` stay in that namespace for their whole life
 * (a TAP's namespace is fixed when /dev/net/tun is opened), so a process
 * living in one namespace can own a TAP in another.
 *
 * `fn` must be synchronous and must not spawn processes or start async I/O:
 * anything libuv does later runs after the thread is back home.
 */
import { sysErrorNow } from "./errors.js";
import { CLONE_NEWNET, O_CLOEXEC, O_RDONLY, close, open, setns } from "./libc.js";

/** Where iproute2 binds named namespaces (ip-netns(8)). */
export const NETNS_RUN_DIR = "/run/netns";

const NETNS_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

export function validateNetnsName(name: string): void {
  if (!NETNS_NAME.test(name) || name === "." || name === "..") {
    throw new RangeError(`invalid network namespace name ${JSON.stringify(name)}: 1..64 of A-Z a-z 0-9 _ . -`);
  }
}

/** Run `fn` inside network namespace `netns`; with `undefined`, just run it here. */
export function withNetns<T>(netns: string | undefined, fn: () => T): T {
  if (netns === undefined) return fn();
  validateNetnsName(netns);
  const home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (home < 0) throw sysErrorNow("open(/proc/thread-self/ns/net)", "this thread's network namespace");
  try {
    const path = `${NETNS_RUN_DIR}/${netns}`;
    const target = open(path, O_RDONLY | O_CLOEXEC);
    if (target < 0) throw sysErrorNow(`open(${path})`, `network namespace ${netns}`);
    try {
      if (setns(target, CLONE_NEWNET) < 0) throw sysErrorNow("setns(CLONE_NEWNET)", `network namespace ${netns}`);
    } finally {
      close(target);
    }
    try {
      return fn();
    } finally {
      if (setns(home, CLONE_NEWNET) < 0) {
        // Practically impossible (we hold the fd); never leave the thread astray silently.
        const err = sysErrorNow("setns(CLONE_NEWNET)", "this thread's own network namespace (returning)");
        process.emitWarning(err.message);
        throw err;
      }
    }
  } finally {
    close(home);
  }
}
