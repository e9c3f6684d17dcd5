/**
 * The CLI's argument checks, through the real entry point in a child
 * process (main.js runs on import). No daemon is reached: every case
 * fails before it would connect.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const MAIN = fileURLToPath(new URL("./main.js", import.meta.url));

function run(args: string[]): { code: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: "utf8", env: { ...process.env, COLO_RUN_DIR: "/nonexistent-colo-run" }, timeout: 30_000 });
  return { code: r.status, stderr: r.stderr };
}

test("cli: replication options on a plain migration are refused, naming them (--arbiter is the handover's there)", () => {
  const r = run(["migrate", "vm", "10.0.0.1", "--arbiter", "10.0.0.9", "--compare-timeout", "5", "--lease", "900"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--compare-timeout, --lease only with --colo/);
});

test("cli: protect refuses options of the other mode, naming them", () => {
  const r = run(["protect", "vm", "10.0.0.1", "--remus", "--compare-timeout", "5"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--compare-timeout not with --remus/);
  const i = run(["protect", "vm", "10.0.0.1", "--interval", "50"]);
  assert.equal(i.code, 2);
  assert.match(i.stderr, /--interval only with --remus/);
});

test("cli: bad numbers are refused before anything runs", () => {
  const r = run(["migrate", "--colo", "vm", "10.0.0.1", "--checkpoint-min-gap", "-3"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /expected a whole number >= 0, got "-3"/);
  const l = run(["migrate-receive", "--colo", "--lease", "0"]);
  assert.equal(l.code, 2);
  assert.match(l.stderr, /expected a positive whole number, got "0"/);
  // The error and a pointer to --help, not the whole usage.
  const i = run(["protect", "vm", "10.0.0.1", "--interval", "abc"]);
  assert.equal(i.code, 2);
  assert.deepEqual(i.stderr.trim().split("\n"), [
    `error: option '--interval <ms>' argument 'abc' is invalid. expected a positive whole number, got "abc"`,
    "(add --help for the command's options)",
  ]);
});

test("cli: a bad --arbiter is refused on one line naming the option and the value; etcd:// lists are accepted", () => {
  for (const args of [["migrate-receive", "--colo"], ["remus", "vm", "10.0.0.1"], ["migrate", "--colo", "vm", "10.0.0.1"]]) {
    const r = run([...args, "--arbiter", "etcd://10.79.0.1:2379,:2379"]);
    assert.equal(r.code, 2, args.join(" "));
    assert.match(r.stderr, /^error: option '--arbiter <[^>]+>' argument 'etcd:\/\/10\.79\.0\.1:2379,:2379' is invalid\. etcd endpoint 2 \(":2379"\) has an empty host$/m);
  }
  // A good list gets past the option check (to the next one: no such VM here).
  const ok = run(["remus", "vm", "10.0.0.1", "--arbiter", "etcd://10.79.0.1:2379,10.79.0.2"]);
  assert.equal(ok.code, 1);
  assert.match(ok.stderr, /no VM named vm is running/);
});

test("cli: --reprotect-config needs --reprotect, and --reprotect needs --colo where the command has both modes", () => {
  for (const args of [
    ["protect", "vm", "10.0.0.1", "--reprotect-config", "/tmp/x.cfg"],
    ["migrate", "--colo", "vm", "10.0.0.1", "--reprotect-config", "/tmp/x.cfg"],
    ["remus", "vm", "10.0.0.1", "--reprotect-config", "/tmp/x.cfg"],
  ]) {
    const r = run(args);
    assert.notEqual(r.code, 0, args.join(" "));
    assert.match(r.stderr, /--reprotect-config needs --reprotect HOST\[:PORT\]/, args.join(" "));
  }
  const m = run(["migrate", "vm", "10.0.0.1", "--reprotect", "10.0.0.2"]);
  assert.equal(m.code, 2);
  assert.match(m.stderr, /--reprotect only with --colo/);
  const rcv = run(["migrate-receive", "--reprotect", "10.0.0.2"]);
  assert.notEqual(rcv.code, 0);
  assert.match(rcv.stderr, /--reprotect needs --colo/);
  const bad = run(["protect", "vm", "10.0.0.1", "--reprotect", "10.0.0.2:99999"]);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /99999/);
});
