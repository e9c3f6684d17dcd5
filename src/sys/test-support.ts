/**
 * Helpers for the tests of src/sys (not used by the product code): running
 * commands asynchronously and making throwaway network namespaces.
 */
import { spawn } from "node:child_process";

export interface CommandResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function isRoot(): boolean {
  return typeof process.getuid === "function" && process.getuid() === 0;
}

const NEEDS_ROOT = "needs root (network namespaces, /dev/net/tun, CAP_NET_ADMIN)";

/** CI=true (or 1): a missing precondition fails the tests that need it instead of skipping them. */
function strictPreconditions(): boolean {
  return /^(true|1)$/i.test(process.env.CI ?? "");
}

/**
 * Why the kernel-facing tests cannot run here (their `skip` reason), or
 * false when they can. Under CI=true it is false even without root: the
 * tests run, and makeNetns() -- where each of them starts -- fails with
 * the reason.
 */
export function rootSkipReason(): string | false {
  return isRoot() || strictPreconditions() ? false : NEEDS_ROOT;
}

/**
 * Runs a command to its end (async; stdin closed). `timeoutMs` is a guard
 * against a hung child (it is killed and the promise rejects), not a wait.
 */
export function runCommand(cmd: string, args: string[], timeoutMs = 20_000): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${cmd} ${args.join(" ")}: no exit within ${timeoutMs} ms (killed); stderr: ${stderr}`));
    }, timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** `ip ARGS`, rejecting with the command and its stderr when it fails. */
export async function ip(...args: string[]): Promise<string> {
  const r = await runCommand("ip", args);
  if (r.code !== 0) throw new Error(`ip ${args.join(" ")} failed (exit ${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

export interface LinkInfo {
  ifname: string;
  ifindex: number;
  flags: string[];
  master?: string;
  link_type?: string;
}

/** `ip -n NETNS -j link show NAME` parsed; null when there is no such link. */
export async function linkInfo(netns: string, name: string): Promise<LinkInfo | null> {
  const r = await runCommand("ip", ["-n", netns, "-j", "link", "show", "dev", name]);
  if (r.code !== 0) return null;
  const list = JSON.parse(r.stdout) as LinkInfo[];
  return list[0] ?? null;
}

let counter = 0;

/**
 * Makes a network namespace with a unique name (`colosys-<pid>-<n>`) and `lo`
 * up (root only: otherwise it fails naming the precondition); the returned
 * function deletes it (idempotent). Register it with
 * t.after() so it runs even when the test fails.
 */
export async function makeNetns(): Promise<{ name: string; remove: () => Promise<void> }> {
  if (!isRoot()) throw new Error(`precondition missing: ${NEEDS_ROOT}`);
  const name = `colosys-${process.pid}-${++counter}`;
  await ip("netns", "add", name);
  let removed = false;
  const remove = async (): Promise<void> => {
    if (removed) return;
    removed = true;
    await ip("netns", "del", name);
  };
  try {
    await ip("-n", name, "link", "set", "lo", "up");
  } catch (err) {
    await remove();
    throw err;
  }
  return { name, remove };
}

/** Names of the namespaces `ip netns list` shows. */
export async function netnsNames(): Promise<string[]> {
  const out = await ip("-j", "netns", "list");
  if (out.trim() === "") return [];
  return (JSON.parse(out) as { name: string }[]).map((n) => n.name);
}
