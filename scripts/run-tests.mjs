#!/usr/bin/env node
// Runs the compiled tests with Node's built-in test runner.
//   --unit   only unit tests (dist/src/**/*.test.js, dist/guest/**/*.test.js)
//   default  unit tests, then integration tests (dist/test/integration/*.test.js),
//            which need root, the lab namespaces and the built guest image.
// Integration tests boot emulated VMs and share 2 cores: they run one file
// at a time (--test-concurrency=1).
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";

const root = new URL("..", import.meta.url).pathname;
const unitOnly = process.argv.includes("--unit");

function find(dir, out = []) {
  let entries;
  try { entries = readdirSync(dir); } catch { return out; }
  for (const e of entries.sort()) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) find(p, out);
    else if (e.endsWith(".test.js")) out.push(p);
  }
  return out;
}

const unit = [...find(join(root, "dist/src")), ...find(join(root, "dist/guest"))];
const integration = unitOnly ? [] : find(join(root, "dist/test/integration"));
const files = [...unit, ...integration];
if (files.length === 0) {
  console.error("run-tests: no test files found under dist/ (did the build run?)");
  process.exit(1);
}
const r = spawnSync(process.execPath, ["--test", "--test-concurrency=1", ...files], { stdio: "inherit" });
process.exit(r.status ?? 1);
