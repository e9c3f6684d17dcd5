#!/usr/bin/env node
// Runs the compiled tests with Node's built-in test runner.
//   --unit   only unit tests (dist/src/**/*.test.js, dist/guest/**/*.test.js,
//            dist/test/**/*.test.js outside dist/test/integration)
//   default  unit tests, then integration tests (dist/test/integration/*.test.js),
//            which need root, the lab namespaces and the built guest image.
// Integration tests boot emulated VMs and share 2 cores: they run one file
// at a time (--test-concurrency=1). They run on the default engine (emu),
// then the files of QEMU_PASS run again with COLO_TEST_ENGINE=qemu
// (test/tools/guest-fixture.ts); the run fails if either pass fails.
//
// The tests run are the ones the sources name: every test/integration/*.test.ts
// (and, for unit tests, every *.test.ts under src/, guest/, bench/ and test/ outside
// test/integration) must have its compiled file under dist/, or the run fails
// before it starts: a missing build never passes as a run without those tests.
// Compiled tests whose source is gone (left in dist/ by an earlier build) are
// not run.
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const unitOnly = process.argv.includes("--unit");
const INTEGRATION = "test/integration";

/** Paths (relative to the repository) of the files under `dir` whose name ends with `suffix`. */
function find(dir, suffix, out = []) {
  let entries;
  try {
    entries = readdirSync(join(root, dir));
  } catch {
    return out;
  }
  for (const e of entries.sort()) {
    const p = join(dir, e);
    if (statSync(join(root, p)).isDirectory()) find(p, suffix, out);
    else if (e.endsWith(suffix)) out.push(p);
  }
  return out;
}

/** The compiled test for each source test; fails the run when one is missing. */
function compiled(sources, what) {
  const files = sources.map((src) => ({ src, js: join("dist", src.replace(/\.ts$/, ".js")) }));
  const missing = files.filter((f) => !existsSync(join(root, f.js)));
  if (missing.length > 0) {
    console.error(`run-tests: ${missing.length} of ${files.length} ${what} test file(s) are not built:`);
    for (const f of missing) console.error(`  ${f.js} (from ${f.src})`);
    console.error("run-tests: run `npm run build` first; the run would otherwise pass without them.");
    process.exit(1);
  }
  return files.map((f) => f.js);
}

/** Compiled tests in dist/ with no source any more: reported, not run. */
function stale(distDir, expected, keep = () => true) {
  const known = new Set(expected);
  const old = find(distDir, ".test.js").filter((p) => keep(p) && !known.has(p));
  if (old.length > 0) console.error(`run-tests: not running ${old.length} compiled test(s) without a source: ${old.join(", ")}`);
}

const outsideIntegration = (p) => !p.startsWith(`${INTEGRATION}/`) && !p.startsWith(`dist/${INTEGRATION}/`);

const unitSources = [...find("src", ".test.ts"), ...find("guest", ".test.ts"), ...find("bench", ".test.ts"), ...find("test", ".test.ts").filter(outsideIntegration)];
if (unitSources.length === 0) {
  console.error("run-tests: no unit test sources (*.test.ts) under src/, guest/, bench/ or test/");
  process.exit(1);
}
const unit = compiled(unitSources, "unit");
for (const d of ["dist/src", "dist/guest", "dist/bench"]) stale(d, unit);
stale("dist/test", unit, outsideIntegration);

let integration = [];
if (!unitOnly) {
  // Only the folder's own files: helpers live in test/tools, test/faults.
  const sources = existsSync(join(root, INTEGRATION))
    ? readdirSync(join(root, INTEGRATION)).filter((e) => e.endsWith(".test.ts")).sort().map((e) => join(INTEGRATION, e))
    : [];
  if (sources.length === 0) {
    console.error(`run-tests: integration tests expected, but ${INTEGRATION}/ holds no *.test.ts (use --unit for unit tests only)`);
    process.exit(1);
  }
  integration = compiled(sources, "integration");
  stale(`dist/${INTEGRATION}`, integration);
}

/**
 * Integration files that run a second time on the qemu engine (issue 12:
 * lifecycle, migration, compare mode, disk replication and a fault run at
 * least; Remus too). The engine-only test (qemu-engine.test.js) runs in the
 * first pass. colo-compare's test of a SIGKILLed primary QEMU is skipped on
 * emu, which has no engine process.
 */
const QEMU_PASS = ["vm-lifecycle.test.js", "migration.test.js", "colo-compare.test.js", "colo-disk.test.js", "remus.test.js", "faults.test.js", "reprotect.test.js", "etcd-pair.test.js"];

/**
 * Each pass reports TAP on stdout (counted by CI) and spec into a file; when a
 * pass fails, its spec "failing tests" section (each failure with its
 * assertion message) is printed last, so the tail of a long log says why.
 */
const reports = mkdtempSync(join(tmpdir(), "colo-test-report-"));
const failures = [];

function runPass(name, testFiles, env) {
  const spec = join(reports, `${name}.spec.txt`);
  const r = spawnSync(
    process.execPath,
    ["--test", "--test-concurrency=1", "--test-reporter=tap", "--test-reporter-destination=stdout", "--test-reporter=spec", `--test-reporter-destination=${spec}`, ...testFiles.map((f) => join(root, f))],
    { stdio: "inherit", env },
  );
  const status = r.status ?? 1;
  if (status !== 0) failures.push({ name, status, section: failingSection(spec) });
  return status;
}

/** The spec reporter's summary of failures, without Node's internal stack frames. */
function failingSection(spec) {
  let text;
  try {
    text = readFileSync(spec, "utf8");
  } catch {
    return "(no spec report was written)";
  }
  const at = text.lastIndexOf("failing tests:");
  const section = at >= 0 ? text.slice(at) : text.split("\n").slice(-40).join("\n");
  return section
    .split("\n")
    .flatMap((l) => {
      if (!/^\s+at .*\(node:[^)]*\)( \{)?$/.test(l)) return [l];
      return l.endsWith(" {") ? ["  {"] : [];
    })
    .join("\n");
}

const files = [...unit, ...integration];
console.error(`run-tests: ${unit.length} unit test file(s)${unitOnly ? "" : `, ${integration.length} integration test file(s)`}`);
let status = runPass(unitOnly ? "unit" : "default", files, process.env);
if (!unitOnly) {
  const qemuFiles = QEMU_PASS.map((f) => join(`dist/${INTEGRATION}`, f));
  const unknown = qemuFiles.filter((f) => !integration.includes(f));
  if (unknown.length > 0) {
    console.error(`run-tests: the qemu pass names files that are not integration tests: ${unknown.join(", ")}`);
    process.exit(1);
  }
  console.error(`run-tests: qemu pass: ${qemuFiles.length} integration test file(s) again with COLO_TEST_ENGINE=qemu`);
  const q = runPass("qemu", qemuFiles, { ...process.env, COLO_TEST_ENGINE: "qemu" });
  if (q !== 0 && status === 0) status = q;
}
for (const f of failures) {
  console.log(`\n# run-tests: the ${f.name} pass failed (exit ${f.status}); its failures:`);
  for (const line of f.section.split("\n")) console.log(`# ${line}`);
}
rmSync(reports, { recursive: true, force: true });
process.exit(status);
