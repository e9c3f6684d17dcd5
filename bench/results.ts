import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT } from "../test/tools/run.js";
import { GUEST_CACHE, TEST_ENGINE } from "../test/tools/guest-fixture.js";
import { machineInfo } from "./machine.js";

/**
 * Writes a benchmark's result as bench/results/<name>-<timestamp>.json with
 * what makes figures comparable: the machine, the engine, package versions
 * and the guest's manifest. Prints the figures and the file's path.
 */
export function writeResult(name: string, body: Record<string, unknown> & { figures: unknown }): string {
  const date = new Date().toISOString();
  const result = {
    benchmark: name,
    date,
    machine: machineInfo(),
    // COLO_TEST_ENGINE's (the engine the bench's VMs ran on); a result comparing engines says so in its body
    // (its `engine` and `guest` replace these; the manifest is then not read: that engine's image may be absent).
    engine: TEST_ENGINE,
    guest: "guest" in body ? body.guest : (JSON.parse(readFileSync(join(GUEST_CACHE, "manifest.json"), "utf8")) as unknown),
    ...body,
  };
  const dir = join(REPO_ROOT, "bench/results");
  mkdirSync(dir, { recursive: true });
  const out = join(dir, `${name}-${date.replace(/[:.]/g, "-")}.json`);
  writeFileSync(out, JSON.stringify(result, null, 2) + "\n");
  process.stdout.write(JSON.stringify(body.figures, null, 2) + `\nwritten ${out}\n`);
  return out;
}
