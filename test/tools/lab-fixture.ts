import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { GUEST_CACHE } from "./guest-fixture.js";
import { isRoot, runIn } from "./run.js";

/** Why an integration test cannot run here (a `skip` reason), or false. */
export function integrationSkip(): string | false {
  if (!isRoot()) return "needs root (namespaces, TAP devices)";
  if (!existsSync(join(GUEST_CACHE, "initrd.img"))) return "no guest image: run ./bin/colo image build";
  return false;
}

/** redis-cli from the lab's client namespace; asserts it succeeded and returns its output. */
export async function redisFrom(clientNs: string, host: string, args: string[]): Promise<string> {
  const r = await runIn(clientNs, "redis-cli", ["-h", host, ...args], { timeoutMs: 30_000 });
  assert.equal(r.code, 0, `redis-cli ${args.join(" ")}: ${r.stderr}`);
  return r.stdout.trim();
}
