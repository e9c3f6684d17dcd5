import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { getPriority, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { QemuMachine } from "./qemu-args.js";
import { QemuProcess, type QemuProcessOptions } from "./qemu-process.js";
import { QemuProcessError } from "./qemu-process-error.js";
import { QmpError } from "./qmp-error.js";

const NONE: QemuMachine = { machine: { type: "none" }, accel: "tcg" };

/** Running (a zombie left to an init that does not reap counts as gone). */
function alive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

function ms(since: bigint): number {
  return Number(process.hrtime.bigint() - since) / 1e6;
}

/** A parent dir for run dirs, checked empty and removed after the test; the owner is always stopped. */
function owner(t: TestContext, opts: Partial<QemuProcessOptions> = {}): { proc: QemuProcess; parent: string } {
  const parent = mkdtempSync(join(tmpdir(), "qemu-proc-test-"));
  const proc = QemuProcess.create({ vm: "t", runDirParent: parent, ...opts });
  t.after(async () => {
    await proc.kill();
    assert.deepEqual(readdirSync(parent), [], "run dir left behind");
    rmSync(parent, { recursive: true, force: true });
  });
  return { proc, parent };
}

function startFailure(code: string, ...why: RegExp[]): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof QemuProcessError, String(err));
    assert.equal(err.code, code, err.message);
    for (const w of why) assert.match(err.message, w);
    return true;
  };
}

test("process: start -> QMP ready, paused, probed; stop() quits, reaps and removes the run dir", async (t) => {
  const { proc } = owner(t, { vm: "vm-a" });
  assert.equal(statSync(proc.runDir).mode & 0o777, 0o700);
  const t0 = process.hrtime.bigint();
  await proc.start(NONE);
  const startMs = ms(t0);
  const pid = proc.pid;
  assert.ok(alive(pid));
  assert.ok(statSync(proc.qmpSocketPath).isSocket());
  assert.ok(proc.version.major > 7 || (proc.version.major === 7 && proc.version.minor >= 2));
  assert.ok(proc.supports("xen-save-devices-state") && proc.supports("migrate-incoming") && !proc.supports("no-such-command"));
  assert.deepEqual(await proc.commands.queryStatus(), { running: false, status: "prelaunch" });
  assert.match(proc.describe(), /setpriv --pdeathsig SIGKILL -- \S*qemu-system-x86_64 -name guest=vm-a -S -nodefaults/);
  const t1 = process.hrtime.bigint();
  const exit = await proc.stop();
  const stopMs = ms(t1);
  t.diagnostic(`spawn to QMP ready ${startMs.toFixed(1)} ms; stop ${stopMs.toFixed(1)} ms`);
  assert.equal(exit.cause, "stopped");
  assert.equal(exit.code, 0, "quit, not SIGKILL");
  assert.equal(alive(pid), false);
  assert.equal(existsSync(proc.runDir), false);
  assert.equal(await proc.stop(), exit, "idempotent");
  assert.equal(await proc.exited, exit);
  assert.equal(proc.qmp.isClosed, true);
  await assert.rejects(proc.start(NONE), startFailure("STATE", /cannot start: it is finished/));
});

/** The nice value of every thread of `pid` (proc(5) stat field 19). */
function niceOfThreads(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`).map((tid) => {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]);
  });
}

test("process: `nice` holds for every thread QEMU makes; setNice() changes them all", async (t) => {
  const own = getPriority();
  const { proc } = owner(t, { vm: "vm-nice", nice: Math.min(19, own + 7) });
  await proc.start(NONE);
  const pid = proc.pid as number;
  const before = niceOfThreads(pid);
  assert.ok(before.length >= 2, `QEMU runs ${before.length} threads`);
  assert.deepEqual(new Set(before), new Set([Math.min(19, own + 7)]));
  proc.setNice(own);
  assert.deepEqual(new Set(niceOfThreads(pid)), new Set([own]));
  await proc.stop();
});

test("process: a missing binary names the path and the package; nothing is left", async (t) => {
  const { proc } = owner(t, { binary: "/nonexistent/qemu-system-x86_64" });
  await assert.rejects(proc.start(NONE), startFailure("BINARY_MISSING", /\/nonexistent\/qemu-system-x86_64 does not exist/, /qemu-system-x86\b/, /for t:/));
  assert.equal(existsSync(proc.runDir), false);
  assert.equal((await proc.exited).cause, "start-failed");
  const { proc: onPath } = owner(t, { binary: "qemu-system-nosucharch", env: { PATH: "/usr/bin:/bin" } });
  await assert.rejects(onPath.start(NONE), startFailure("BINARY_MISSING", /qemu-system-nosucharch not found on PATH \(\/usr\/bin:\/bin\)/));
});

test("process: an option QEMU refuses fails start with QEMU's own words; process reaped, run dir gone", async (t) => {
  const cases: [QemuMachine, RegExp][] = [
    [{ machine: { type: "nosuchmachine" }, accel: "tcg" }, /unsupported machine type/],
    [{ ...NONE, options: [{ flag: "-object", type: "no-such-object-type", props: { id: "x" } }] }, /no-such-object-type/],
  ];
  for (const [machine, said] of cases) {
    const { proc } = owner(t);
    const t0 = process.hrtime.bigint();
    await assert.rejects(proc.start(machine), startFailure("START_FAILED", /QEMU of t exited at startup \(exit code 1\)/, /QEMU said:/, said));
    t.diagnostic(`refused start reported in ${ms(t0).toFixed(1)} ms`);
    assert.ok(proc.pid !== undefined);
    assert.equal(alive(proc.pid), false);
    assert.equal(existsSync(proc.runDir), false);
    const exit = await proc.exited;
    assert.equal(exit.cause, "start-failed");
    assert.equal(exit.code, 1);
  }
});

test("process: QEMU killed with SIGKILL from outside -> exited ('exited', SIGKILL), QMP closed, run dir gone", async (t) => {
  const { proc } = owner(t);
  await proc.start(NONE);
  const pid = proc.pid;
  assert.ok(pid !== undefined);
  const t0 = process.hrtime.bigint();
  process.kill(pid, "SIGKILL");
  const exit = await proc.exited;
  t.diagnostic(`outside SIGKILL seen as exited in ${ms(t0).toFixed(1)} ms`);
  assert.deepEqual([exit.cause, exit.code, exit.signal], ["exited", null, "SIGKILL"]);
  assert.equal(proc.qmp.isClosed, true);
  assert.equal(existsSync(proc.runDir), false);
  assert.equal(await proc.stop(), exit, "stop() after the end returns the same exit");
});

test("process: QMP closed under a live QEMU -> it is killed ('monitor-closed')", async (t) => {
  const { proc } = owner(t);
  await proc.start(NONE);
  const pid = proc.pid;
  proc.qmp.fail(new QmpError("t", "PROTOCOL", "test: the monitor is not trusted any more"));
  const exit = await proc.exited;
  assert.deepEqual([exit.cause, exit.signal], ["monitor-closed", "SIGKILL"]);
  assert.equal(alive(pid), false);
});

test("process: kill() during stop() and before start() ends everything once", async (t) => {
  const { proc } = owner(t);
  await proc.start(NONE);
  const stopping = proc.stop();
  const killed = proc.kill();
  assert.equal(await stopping, await killed);
  assert.equal(alive(proc.pid), false);
  const { proc: never } = owner(t);
  const exit = await never.stop();
  assert.deepEqual([exit.cause, exit.pid, exit.code], ["stopped", undefined, null]);
  assert.equal(existsSync(never.runDir), false);
});

/** An executable standing in for QEMU: a node script given QEMU's argv; `qmpPath` holds the -chardev socket path. */
function fakeQemu(t: TestContext, body: string): string {
  const dir = mkdtempSync(join(tmpdir(), "fake-qemu-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const fake = join(dir, "qemu-system-x86_64");
  writeFileSync(
    fake,
    `#!${process.execPath}
const net = require("node:net");
const spec = process.argv[process.argv.indexOf("-chardev") + 1];
const qmpPath = /path=((?:[^,]|,,)*)/.exec(spec)[1].replaceAll(",,", ",");
${body}
`,
  );
  chmodSync(fake, 0o755);
  return fake;
}

test("process: a QEMU older than 7.2 (from its QMP greeting) is refused and killed", async (t) => {
  // Serves QMP with a 6.2 greeting, like an old QEMU would.
  const fake = fakeQemu(
    t,
    `net.createServer((s) => {
  s.write(JSON.stringify({ QMP: { version: { qemu: { major: 6, minor: 2, micro: 0 }, package: "old" }, capabilities: [] } }) + "\\r\\n");
  s.on("data", (d) => { for (const l of d.toString().split("\\n").filter(Boolean)) s.write(JSON.stringify({ return: {}, id: JSON.parse(l).id }) + "\\r\\n"); });
}).listen(qmpPath);`,
  );
  const { proc } = owner(t, { binary: fake });
  await assert.rejects(proc.start(NONE), startFailure("VERSION_TOO_OLD", /QEMU 6\.2\.0 \(old\) at .*qemu-system-x86_64 is older than 7\.2/));
  assert.equal(alive(proc.pid), false);
  assert.equal(existsSync(proc.runDir), false);
});

test("process: QEMU exiting after its QMP socket accepted is still START_FAILED with its stderr", async (t) => {
  const fake = fakeQemu(
    t,
    `net.createServer(() => { process.stderr.write("fake-qemu: could not open disk image /x: No such file\\n"); process.exit(1); }).listen(qmpPath);`,
  );
  const { proc } = owner(t, { binary: fake });
  await assert.rejects(proc.start(NONE), startFailure("START_FAILED", /exited at startup \(exit code 1\)/, /could not open disk image \/x/));
  assert.equal(existsSync(proc.runDir), false);
});

test("process: no QMP socket within startTimeoutMs is START_TIMEOUT; the process is killed", async (t) => {
  const fake = fakeQemu(t, `setInterval(() => {}, 1000);`);
  const { proc } = owner(t, { binary: fake, startTimeoutMs: 150 });
  await assert.rejects(proc.start(NONE), startFailure("START_TIMEOUT", /QMP socket .*qmp\.sock not ready after \d+ ms/));
  const exit = await proc.exited;
  assert.deepEqual([exit.cause, exit.signal], ["start-failed", "SIGKILL"]);
  assert.equal(alive(proc.pid), false);
});

test("process: QEMU dies with its owner (the owning process SIGKILLed: pdeathsig)", async (t) => {
  const parent = mkdtempSync(join(tmpdir(), "qemu-orphan-test-"));
  t.after(() => rmSync(parent, { recursive: true, force: true })); // its owner died: nobody else removes it
  const module = new URL("./qemu-process.js", import.meta.url).href;
  const script = `
    const { QemuProcess } = await import(${JSON.stringify(module)});
    const q = QemuProcess.create({ vm: "orphan", runDirParent: ${JSON.stringify(parent)} });
    await q.start({ machine: { type: "none" }, accel: "tcg" });
    console.log(JSON.stringify({ pid: q.pid }));
    setInterval(() => {}, 1000);`;
  const owner = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
  const ownerGone = new Promise((resolve) => owner.once("close", resolve));
  t.after(async () => {
    owner.kill("SIGKILL");
    await ownerGone;
  });
  assert.ok(owner.stdout !== null);
  const [line] = await Promise.race([
    (async () => {
      for await (const l of createInterface({ input: owner.stdout })) return [l];
      return [""];
    })(),
    ownerGone.then(() => [""]),
  ]);
  const { pid } = JSON.parse(line ?? "") as { pid: number };
  assert.ok(alive(pid));
  owner.kill("SIGKILL");
  await ownerGone;
  const t0 = process.hrtime.bigint();
  while (alive(pid) && ms(t0) < 3000) await new Promise((r) => setTimeout(r, 10));
  if (alive(pid)) process.kill(pid, "SIGKILL");
  assert.equal(alive(pid), false, "QEMU outlived its owner");
});
