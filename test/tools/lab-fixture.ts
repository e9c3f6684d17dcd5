import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { GUEST_CACHE, GUEST_KERNEL, TEST_ENGINE } from "./guest-fixture.js";
import { isRoot, runIn } from "./run.js";

/**
 * Why an integration test cannot run here, or false. Hooks (before/after)
 * return early when it is set; tests are declared with `preconditionTest`.
 */
export function integrationSkip(): string | false {
  if (!isRoot()) return "needs root (namespaces, TAP devices)";
  if (!existsSync(join(GUEST_CACHE, "initrd.img")) || !existsSync(GUEST_KERNEL)) return `no ${TEST_ENGINE} guest image in ${GUEST_CACHE}: run ./bin/colo image build`;
  if (TEST_ENGINE === "qemu" && !existsSync("/usr/bin/qemu-system-x86_64")) return "no qemu-system-x86_64 (Debian's qemu-system-x86; scripts/setup-host.sh installs it)";
  return false;
}

/** CI=true (or 1): a missing precondition fails the tests that need it instead of skipping them. */
export function strictPreconditions(env: NodeJS.ProcessEnv = process.env): boolean {
  return /^(true|1)$/i.test(env.CI ?? "");
}

export type PreconditionTestFn = (t: TestContext) => void | Promise<void>;

/**
 * `test()` for tests that need what `missing` says is missing (a reason
 * from integrationSkip(), or false when nothing is). With nothing missing
 * the test runs as given. Otherwise it is skipped with the reason, except
 * under CI=true, where it fails at once with the reason (a CI run whose
 * machine lacks root or the guest image must not pass by skipping).
 */
export function preconditionTest(missing: string | false, env: NodeJS.ProcessEnv = process.env): (name: string, options: { timeout?: number }, fn: PreconditionTestFn) => void {
  return (name, options, fn) => {
    if (missing === false) void test(name, options, fn);
    else if (strictPreconditions(env)) void test(name, options, () => assert.fail(`CI=${env.CI}: precondition missing: ${missing}`));
    else void test(name, { ...options, skip: missing }, fn);
  };
}

/** redis-cli from the lab's client namespace; asserts it succeeded and returns its output. */
export async function redisFrom(clientNs: string, host: string, args: string[]): Promise<string> {
  const r = await runIn(clientNs, "redis-cli", ["-h", host, ...args], { timeoutMs: 30_000 });
  assert.equal(r.code, 0, `redis-cli ${args.join(" ")}: ${r.stderr}`);
  return r.stdout.trim();
}
