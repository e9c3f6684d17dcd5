import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { QmpClient, type QmpCloseInfo } from "./qmp-client.js";
import { QmpCommands } from "./qmp-commands.js";
import { QmpError } from "./qmp-error.js";
import { onQmpEvent } from "./qmp-events.js";

const QEMU = "qemu-system-x86_64";

interface BareQemu {
  child: ChildProcess;
  socket: string;
  exited: Promise<void>;
}

/** A QEMU without devices, paused, QMP on a socket in a temp dir; killed, reaped and removed after the test. */
function bareQemu(t: TestContext): BareQemu {
  const dir = mkdtempSync(join(tmpdir(), "qmp-test-"));
  const socket = join(dir, "qmp.sock");
  const child = spawn(QEMU, ["-machine", "none", "-S", "-nodefaults", "-no-user-config", "-display", "none", "-qmp", `unix:${socket},server=on,wait=off`], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  const exited = new Promise<void>((resolve) => child.once("close", () => resolve()));
  t.after(async () => {
    child.kill("SIGCONT");
    child.kill("SIGKILL");
    await exited;
    rmSync(dir, { recursive: true, force: true });
  });
  return { child, socket, exited };
}

async function connectBare(t: TestContext, vm = "t1"): Promise<{ qemu: BareQemu; qmp: QmpClient }> {
  const qemu = bareQemu(t);
  // QEMU binds the socket before it listens: retry while it is missing or refuses (as QemuProcess does).
  for (let i = 0; ; i++) {
    try {
      const qmp = await QmpClient.connect({ vm, path: qemu.socket, timeoutMs: 5000 });
      t.after(() => qmp.close());
      return { qemu, qmp };
    } catch (err) {
      const retry = err instanceof QmpError && (err.errno === "ENOENT" || err.errno === "ECONNREFUSED");
      if (!retry || i >= 1000) throw err;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

test("QMP: greeting names QEMU >= 7.2; after negotiation query-version agrees", async (t) => {
  const { qmp } = await connectBare(t);
  const v = qmp.greeting.version;
  assert.ok(v.major > 7 || (v.major === 7 && v.minor >= 2), `QEMU ${v.major}.${v.minor}`);
  assert.equal(typeof v.package, "string");
  assert.ok(qmp.greeting.capabilities.includes("oob"));
  assert.deepEqual(await new QmpCommands(qmp).queryVersion(), v);
});

test("QMP: query-status prelaunch -> cont -> running (RESUME) -> stop -> paused (STOP)", async (t) => {
  const { qmp } = await connectBare(t);
  const cmd = new QmpCommands(qmp);
  const seen: string[] = [];
  onQmpEvent(qmp, "STOP", () => seen.push("STOP"));
  onQmpEvent(qmp, "RESUME", () => seen.push("RESUME"));
  assert.deepEqual(await cmd.queryStatus(), { running: false, status: "prelaunch" });
  await cmd.cont();
  assert.deepEqual(await cmd.queryStatus(), { running: true, status: "running" });
  await cmd.stop();
  assert.deepEqual(await cmd.queryStatus(), { running: false, status: "paused" });
  // QEMU emits each event before the reply of the command that caused it.
  assert.deepEqual(seen, ["RESUME", "STOP"]);
});

test("QMP: an unknown command is a QmpError CommandNotFound naming it; the connection stays usable", async (t) => {
  const { qmp } = await connectBare(t, "vm-x");
  await assert.rejects(qmp.execute("no-such-command"), (err: unknown) => {
    assert.ok(err instanceof QmpError);
    assert.equal(err.code, "COMMAND_FAILED");
    assert.equal(err.class, "CommandNotFound");
    assert.equal(err.command, "no-such-command");
    assert.match(err.message, /no-such-command on vm-x failed: CommandNotFound/);
    assert.match(err.desc ?? "", /has not been found/);
    return true;
  });
  assert.equal((await new QmpCommands(qmp).queryStatus()).status, "prelaunch");
});

test("QMP: a command without a reply times out; its late reply is dropped and the next call works", async (t) => {
  const { qemu, qmp } = await connectBare(t);
  qemu.child.kill("SIGSTOP");
  const started = process.hrtime.bigint();
  await assert.rejects(qmp.execute("query-status", undefined, { timeoutMs: 100 }), (err: unknown) => {
    assert.ok(err instanceof QmpError);
    assert.equal(err.code, "TIMEOUT");
    assert.match(err.message, /query-status to t1 got no reply within 100 ms/);
    return true;
  });
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  // libuv's loop time can lag the clock a little, so a timer may end a bit before 100 ms of hrtime.
  assert.ok(ms >= 50 && ms < 2000, `timed out after ${ms} ms`);
  qemu.child.kill("SIGCONT");
  assert.equal(await qmp.execute("human-monitor-command", { "command-line": "info status" }), "VM status: paused (prelaunch)\r\n");
});

test("QMP: QEMU killed -> pending calls reject 'QMP connection to <vm> closed', one close notification", async (t) => {
  const { qemu, qmp } = await connectBare(t, "dying");
  const closes: QmpCloseInfo[] = [];
  qmp.onClose((info) => closes.push(info));
  qemu.child.kill("SIGSTOP"); // keeps both calls pending until the kill
  const a = qmp.execute("query-status");
  const b = qmp.execute("query-version");
  qemu.child.kill("SIGKILL");
  for (const call of [a, b]) {
    await assert.rejects(call, (err: unknown) => {
      assert.ok(err instanceof QmpError);
      assert.equal(err.code, "CLOSED");
      assert.match(err.message, /^QMP connection to dying closed while query-(status|version) was pending/);
      return true;
    });
  }
  const info = await qmp.closed;
  assert.equal(info.local, false);
  assert.match(info.error.message, /QMP connection to dying closed/);
  await assert.rejects(qmp.execute("query-status"), /QMP connection to dying closed before query-status/);
  qmp.close(); // idempotent, no second notification
  await new Promise((r) => setImmediate(r));
  assert.equal(closes.length, 1);
  assert.equal(qmp.isClosed, true);
});

test("QMP commands: migration capabilities, query-migrate, device state file, system_reset (RESET), query-commands", async (t) => {
  const { qemu, qmp } = await connectBare(t);
  const cmd = new QmpCommands(qmp);
  const names = await cmd.queryCommands();
  for (const c of ["xen-save-devices-state", "migrate-incoming", "migrate-set-capabilities", "query-migrate"]) assert.ok(names.has(c), c);
  await cmd.migrateSetCapabilities([{ capability: "x-ignore-shared", state: true }]);
  assert.deepEqual(await cmd.queryMigrate(), { status: "none" });
  const file = join(qemu.socket, "..", "devices.bin");
  await cmd.xenSaveDevicesState(file);
  assert.ok(statSync(file).size > 0);
  const resets: unknown[] = [];
  onQmpEvent(qmp, "RESET", (d) => resets.push(d));
  await cmd.systemReset();
  assert.deepEqual(resets, [{ guest: false, reason: "host-qmp-system-reset" }]);
  assert.match(await cmd.humanMonitorCommand("info status"), /paused/);
});

test("QMP: connecting to a missing socket is CONNECT_FAILED with errno ENOENT", async () => {
  await assert.rejects(QmpClient.connect({ vm: "nobody", path: "/nonexistent/qmp.sock" }), (err: unknown) => {
    assert.ok(err instanceof QmpError);
    assert.equal(err.code, "CONNECT_FAILED");
    assert.equal(err.errno, "ENOENT");
    assert.match(err.message, /\/nonexistent\/qmp\.sock of nobody/);
    return true;
  });
});

// --- a scripted QMP server, for what a real QEMU will not send ---

const GREETING = JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: "fake" }, capabilities: [] } });

/** Serves one connection: the greeting (unless `greeting` is given), then `reply` for each command line. */
async function fakeServer(t: TestContext, reply: (cmd: { execute: string; id: number }, sock: Socket) => void, greeting = GREETING): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), "qmp-fake-"));
  const path = join(dir, "qmp.sock");
  const sockets = new Set<Socket>();
  const server: Server = createServer((sock) => {
    sockets.add(sock);
    sock.write(`${greeting}\r\n`);
    let buf = "";
    sock.on("data", (d) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        reply(JSON.parse(line) as { execute: string; id: number }, sock);
      }
    });
    sock.on("error", () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  t.after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });
  return path;
}

const ok = (cmd: { id: number }, sock: Socket, value: unknown = {}): void => void sock.write(`${JSON.stringify({ return: value, id: cmd.id })}\r\n`);

test("QMP: a malformed line closes the connection with an error naming it; pending calls reject", async (t) => {
  const path = await fakeServer(t, (cmd, sock) => {
    if (cmd.execute === "qmp_capabilities") ok(cmd, sock);
    else sock.write('{"return": {}, "id": oops}\r\n');
  });
  const qmp = await QmpClient.connect({ vm: "fake", path });
  await assert.rejects(qmp.execute("query-status"), /QMP connection to fake closed while query-status was pending .*malformed line from QEMU: not JSON .*"id": oops/);
  const info = await qmp.closed;
  assert.equal(info.error.code, "PROTOCOL");
  assert.match(info.error.message, /malformed line from QEMU/);
});

test("QMP: a first line that is not a greeting fails connect() with GREETING", async (t) => {
  const path = await fakeServer(t, () => undefined, '{"return": {}}');
  await assert.rejects(QmpClient.connect({ vm: "fake", path }), (err: unknown) => {
    assert.ok(err instanceof QmpError);
    assert.equal(err.code, "GREETING");
    assert.match(err.message, /first line is not a QMP greeting/);
    return true;
  });
});

test("QMP: no reply to qmp_capabilities fails connect() within its timeout", async (t) => {
  const path = await fakeServer(t, () => undefined);
  await assert.rejects(QmpClient.connect({ vm: "fake", path, timeoutMs: 80 }), (err: unknown) => {
    assert.ok(err instanceof QmpError);
    assert.equal(err.code, "GREETING");
    assert.match(err.message, /within 80 ms/);
    return true;
  });
});

test("QMP: replies matched by id out of order; events in between reach only their subscribers; unsubscribe works", async (t) => {
  const held: { id: number }[] = [];
  const path = await fakeServer(t, (cmd, sock) => {
    if (cmd.execute === "qmp_capabilities") return ok(cmd, sock);
    held.push(cmd);
    if (held.length === 2) {
      const [first, second] = held;
      sock.write(`${JSON.stringify({ event: "STOP", timestamp: { seconds: 1, microseconds: 2 } })}\r\n`);
      if (second !== undefined) ok(second, sock, "second");
      sock.write(`${JSON.stringify({ event: "MIGRATION", data: { status: "completed" }, timestamp: { seconds: 1, microseconds: 3 } })}\r\n`);
      if (first !== undefined) ok(first, sock, "first");
    }
  });
  const qmp = await QmpClient.connect({ vm: "fake", path });
  const events: string[] = [];
  const off = qmp.on("STOP", (e) => events.push(e.event));
  onQmpEvent(qmp, "MIGRATION", (d) => events.push(`MIGRATION ${d.status}`));
  const [a, b] = await Promise.all([qmp.execute("a"), qmp.execute("b")]);
  assert.deepEqual([a, b], ["first", "second"]);
  assert.deepEqual(events, ["STOP", "MIGRATION completed"]);
  off();
  qmp.close();
  assert.equal((await qmp.closed).local, true);
});

test("QMP: an event whose data QEMU documents otherwise fails the connection with BAD_REPLY", async (t) => {
  const path = await fakeServer(t, (cmd, sock) => {
    if (cmd.execute === "qmp_capabilities") return ok(cmd, sock);
    sock.write(`${JSON.stringify({ event: "SHUTDOWN", data: { guest: "yes" }, timestamp: { seconds: 1, microseconds: 0 } })}\r\n`);
  });
  const qmp = await QmpClient.connect({ vm: "fake", path });
  let called = false;
  onQmpEvent(qmp, "SHUTDOWN", () => (called = true));
  await assert.rejects(qmp.execute("x"), /SHUTDOWN from fake has bad data: guest is not a boolean/);
  assert.equal((await qmp.closed).error.code, "BAD_REPLY");
  assert.equal(called, false);
});

test("QMP commands: a reply of the wrong shape is BAD_REPLY naming the command", async (t) => {
  const path = await fakeServer(t, (cmd, sock) => ok(cmd, sock, cmd.execute === "query-status" ? { running: true, status: "sideways" } : {}));
  const qmp = await QmpClient.connect({ vm: "fake", path });
  t.after(() => qmp.close());
  await assert.rejects(new QmpCommands(qmp).queryStatus(), (err: unknown) => {
    assert.ok(err instanceof QmpError);
    assert.equal(err.code, "BAD_REPLY");
    assert.equal(err.command, "query-status");
    assert.match(err.message, /"sideways"/);
    return true;
  });
});
