import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { FakeRedis } from "./fake-redis.js";
import { parseCliArgs, UsageError, VerifyingClient, type VerifyingClientOptions } from "./verify-client.js";
import { monotonicMs } from "../sys/clock.js";

async function withServer(fn: (server: FakeRedis, port: number) => Promise<void>): Promise<void> {
  const server = new FakeRedis();
  const port = await server.listen();
  try {
    await fn(server, port);
  } finally {
    await server.close();
  }
}

function client(port: number, options: Partial<VerifyingClientOptions> = {}): VerifyingClient {
  return new VerifyingClient({ host: "127.0.0.1", port, durationMs: 10_000, commandTimeoutMs: 2000, ...options });
}

test("verifying client: a normal run loses nothing", async () => {
  await withServer(async (server, port) => {
    const c = client(port, { connections: 3, maxOps: 600, incrEvery: 5 });
    await c.run();
    const s = await c.verify();
    assert.equal(s.ok, true);
    assert.equal(s.lostCount, 0);
    assert.deepEqual(s.lost, []);
    // maxOps counts over all connections; every 5th command of a connection is an INCR.
    assert.equal(s.acknowledged + s.incr.acknowledged, 600);
    assert.equal(s.verified, s.acknowledged);
    assert.equal(s.unacknowledged + s.incr.unacknowledged, 0);
    assert.ok(s.incr.acknowledged >= 117 && s.incr.acknowledged <= 120, `${s.incr.acknowledged} INCRs`);
    assert.equal(s.incr.violations, 0);
    assert.equal(s.incr.keys.length, 3);
    for (const k of s.incr.keys) assert.equal(k.final, k.lastAcked);
    assert.equal(s.connectionResets + s.connectTimeouts + s.connectErrors + s.reconnects + s.commandTimeouts, 0);
    assert.equal(
      s.opsPerSecond.reduce((a, b) => a + b, 0),
      600,
    );
    assert.equal(server.connectionsAccepted, 4, "3 writers and 1 verifier");
    assert.ok(s.prefix.startsWith("colo:v:"));
    const acks = c.acknowledgements();
    assert.equal(acks.length, 600);
    const first = acks.find((a) => a.op === "SET");
    assert.ok(first && server.data.get(first.key) === first.value);
    assert.ok(acks.every((a, i) => i === 0 || a.atMs >= acks[i - 1]!.atMs));
    assert.doesNotThrow(() => JSON.parse(JSON.stringify(s)));
  });
});

test("verifying client: a key the server lost is reported by name", async () => {
  await withServer(async (server, port) => {
    const c = client(port, { maxOps: 100, incrEvery: 0 });
    await c.run();
    const victim = c.acknowledgements()[42]!;
    server.data.delete(victim.key);
    const s = await c.verify();
    assert.equal(s.ok, false);
    assert.equal(s.lostCount, 1);
    assert.equal(s.verified, 99);
    assert.deepEqual(s.lost, [{ key: victim.key, expected: victim.value, got: null }]);
  });
});

test("verifying client: the lost list is capped at 50, the count is not", async () => {
  await withServer(async (server, port) => {
    const c = client(port, { maxOps: 300, incrEvery: 0 });
    await c.run();
    for (const k of [...server.data.keys()]) server.data.set(k, "stale");
    const s = await c.verify();
    assert.equal(s.lostCount, 300);
    assert.equal(s.lost.length, 50);
    assert.equal(s.lost[0]!.got, "stale");
  });
});

test("verifying client: resets are counted, reconnects go on, unacknowledged writes are not lost", async () => {
  await withServer(async (server, port) => {
    let sets = 0;
    let appliedButUnacked = "";
    server.onCommand = (args) => {
      if (args[0] !== "SET") return;
      sets++;
      if (sets === 50) {
        appliedButUnacked = args[1]!;
        return "reset-after";
      }
      if (sets === 120) return "reset-before";
    };
    const c = client(port, { maxOps: 300, incrEvery: 0 });
    await c.run();
    const s = await c.verify();
    assert.equal(s.connectionResets, 2);
    assert.equal(s.reconnects, 2);
    assert.equal(s.unacknowledged, 2);
    assert.equal(s.acknowledged, 298);
    assert.equal(s.lostCount, 0);
    assert.equal(s.ok, true);
    assert.ok(server.data.has(appliedButUnacked), "applied, never acknowledged, not checked");
  });
});

test("verifying client: without reconnect a connection that resets stays down", async () => {
  await withServer(async (server, port) => {
    server.onCommand = (_args, i) => (i === 30 ? "reset-before" : "reply");
    const c = client(port, { maxOps: 300, incrEvery: 3, reconnect: false });
    await c.run();
    const s = await c.verify();
    assert.equal(s.connectionResets, 1);
    assert.equal(s.reconnects, 0);
    assert.equal(s.acknowledged + s.incr.acknowledged, 30);
    assert.equal(s.unacknowledged + s.incr.unacknowledged, 1);
    assert.equal(s.ok, true);
  });
});

test("verifying client: unacknowledged INCRs across reconnects are allowed, a jump in the counter is not", async () => {
  await withServer(async (server, port) => {
    let incrs = 0;
    server.onCommand = (args) => {
      if (args[0] !== "INCR") return;
      incrs++;
      if (incrs === 5) return "reset-after";
      if (incrs === 9) return "reset-before";
      if (incrs === 15) server.data.set(args[1]!, String(Number(server.data.get(args[1]!)) + 7));
    };
    const c = client(port, { maxOps: 100, incrEvery: 4 });
    await c.run();
    const s = await c.verify();
    assert.equal(s.lostCount, 0);
    assert.equal(s.incr.unacknowledged, 2);
    assert.equal(s.incr.violations, 1);
    assert.equal(s.incr.problems[0]!.kind, "gap");
    assert.match(s.incr.problems[0]!.detail, /acknowledged 21 after 13/);
    assert.equal(s.ok, false);
  });
});

test("verifying client: a counter that went back after the run is caught", async () => {
  await withServer(async (server, port) => {
    const c = client(port, { connections: 2, maxOps: 40, incrEvery: 2 });
    await c.run();
    server.data.set(c.incrKey(1), "3");
    const s = await c.verify();
    assert.equal(s.incr.violations, 1);
    assert.deepEqual(
      s.incr.problems.map((p) => [p.conn, p.kind]),
      [[1, "final-below-acked"]],
    );
  });
});

test("verifying client: a command the server never answers times out, and the client goes on", async () => {
  await withServer(async (server, port) => {
    server.onCommand = (_args, i) => (i === 10 ? "hang" : "reply");
    const c = client(port, { maxOps: 50, incrEvery: 0, commandTimeoutMs: 150 });
    const t0 = monotonicMs();
    await c.run();
    assert.ok(monotonicMs() - t0 < 3000, "bounded by the command timeout");
    const s = await c.verify();
    assert.equal(s.commandTimeouts, 1);
    assert.equal(s.connectionResets, 0);
    assert.equal(s.reconnects, 1);
    assert.equal(s.unacknowledged, 1);
    assert.equal(s.acknowledged, 49);
    assert.ok(s.maxAckGapMs >= 140, `gap ${s.maxAckGapMs}`);
    assert.equal(s.ok, true);
  });
});

test("verifying client: stop() ends the loops; refused connects are counted", async () => {
  await withServer(async (_server, port) => {
    const c = client(port, { connections: 2, durationMs: 60_000, maxOps: 10_000_000 });
    const running = c.run();
    await new Promise((r) => setTimeout(r, 150));
    await c.stop();
    await running;
    const s = await c.verify();
    assert.ok(s.acknowledged > 0);
    assert.equal(s.ok, true);
    assert.ok(s.durationMs < 2000);
  });
  const closed = new FakeRedis();
  const port = await closed.listen();
  await closed.close();
  const c = client(port, { reconnect: true, durationMs: 300 });
  await c.run();
  assert.ok(c.runStats().connectErrors >= 2, "retried with backoff until the time limit");
  assert.equal(c.runStats().acknowledged, 0);
});

test("verify-client CLI: arguments", () => {
  const o = parseCliArgs(["--host", "10.0.0.2", "--connections", "4", "--seconds", "2.5", "--verify-host", "10.0.0.3"]);
  assert.equal(o.client.port, 6379);
  assert.equal(o.client.connections, 4);
  assert.equal(o.client.durationMs, 2500);
  assert.deepEqual(o.verify, { host: "10.0.0.3", port: 6379 });
  assert.equal(parseCliArgs(["--host", "h", "--no-verify"]).verify, null);
  assert.equal(parseCliArgs(["--host", "h", "--verify-only-after-stdin"]).client.durationMs, 3_600_000);
  assert.throws(() => parseCliArgs([]), /--host is required/);
  assert.throws(() => parseCliArgs(["--host", "h", "--port", "70000"]), UsageError);
  assert.throws(() => parseCliArgs(["--host", "h", "--connections", "0"]), UsageError);
  assert.throws(() => parseCliArgs(["--host", "h", "--bogus"]), UsageError);
});

const CLI = fileURLToPath(new URL("./verify-client.js", import.meta.url));

function runCli(args: string[], stdin?: (end: () => void) => void): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    if (stdin) stdin(() => child.stdin.end());
  });
}

test("verify-client CLI: runs, verifies, prints the summary; exit 1 on a lost write, 2 on bad arguments", async () => {
  await withServer(async (server, port) => {
    const ok = await runCli(["--host", "127.0.0.1", "--port", String(port), "--connections", "2", "--max-ops", "200"]);
    assert.equal(ok.code, 0, ok.stderr);
    const summary = JSON.parse(ok.stdout) as { ok: boolean; acknowledged: number; lostCount: number };
    assert.equal(summary.ok, true);
    assert.equal(summary.lostCount, 0);
    assert.ok(summary.acknowledged > 0);

    // Writes until stdin ends; the server loses a key when verification begins.
    let mgets = 0;
    server.onCommand = (args) => {
      if (args[0] === "MGET" && mgets++ === 0) server.data.delete(args[1]!);
    };
    const lost = await runCli(["--host", "127.0.0.1", "--port", String(port), "--verify-only-after-stdin"], (end) => {
      setTimeout(end, 400);
    });
    assert.equal(lost.code, 1, lost.stderr);
    assert.equal((JSON.parse(lost.stdout) as { lostCount: number }).lostCount, 1);
    assert.match(lost.stderr, /LOST: 1 SETs/);
  });
  const bad = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    execFile(process.execPath, [CLI, "--host", "h", "--port", "x"], (err, _out, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : null) : 0, stderr });
    });
  });
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--port: expected an integer in 1\.\.65535, got "x"/);
});
