/**
 * `colo serve` against fake daemons (testing.ts: control sockets this test
 * serves in a private run directory, answering `status` and `metrics` as a
 * daemon does): merged metrics with distinct vm labels, a daemon that does
 * not answer (left out within the bound, counted), one too old for the
 * request, `/api/status`, the page's files, a port in use (the server's
 * error and the CLI's one line).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer, type AddressInfo } from "node:net";
import { test, type TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { ReplicationStats } from "../colo/replication-stats.js";
import { DaemonMetrics } from "../api/metrics.js";
import { monotonicMs } from "../sys/clock.js";
import { CheckpointHistory } from "./checkpoint-history.js";
import { ServeError, ServeServer, type ServeOptions } from "./http-server.js";
import { MetricsAnswerError, parseMetricsAnswer } from "./metrics-json.js";
import { FakeDaemons, samplePrimaryStatus, sampleSecondaryStatus } from "./testing.js";

const COLO = fileURLToPath(new URL("../../../bin/colo", import.meta.url));

/** A daemon's metrics as the real module makes them, fed a few checkpoints. */
function daemonMetrics(vm: string, status: Record<string, unknown>): DaemonMetrics {
  const m = new DaemonMetrics();
  m.setVm(vm);
  const stats = new ReplicationStats("primary", "h2:8002", "compare");
  m.watch(stats);
  m.setSource(() => ({ session: stats, status }));
  stats.recordCheckpoint({ pauseMs: 700, pages: 40_000, bytes: 1, reason: "initial" });
  stats.recordCheckpoint({ pauseMs: 45, pages: 30, bytes: 130_000, reason: "payload", phasesMs: { pause: 1, pages: 20 } });
  return m;
}

async function serve(t: TestContext, daemons: FakeDaemons, opts: Partial<ServeOptions> = {}): Promise<{ server: ServeServer; log: string[] }> {
  const log: string[] = [];
  const server = await ServeServer.listen({ host: "127.0.0.1", port: 0, dir: daemons.dir, scrapeTimeoutMs: 300, statusTimeoutMs: 300, pollMs: 200, log: (m) => log.push(m), ...opts });
  t.after(() => server.close());
  return { server, log };
}

async function get(server: ServeServer, path: string, method = "GET"): Promise<{ status: number; type: string; body: string }> {
  const res = await fetch(new URL(path, server.url), { method });
  return { status: res.status, type: res.headers.get("content-type") ?? "", body: await res.text() };
}

async function fakes(t: TestContext): Promise<FakeDaemons> {
  const d = await FakeDaemons.start();
  t.after(() => d.close());
  return d;
}

test("colo serve: /metrics merges every live daemon's metrics, each series keeps its vm label; HELP and TYPE once", async (t) => {
  const d = await fakes(t);
  const a = daemonMetrics("alpha", samplePrimaryStatus("alpha", "10.77.1.2:8002"));
  const b = daemonMetrics("beta", samplePrimaryStatus("beta", "10.77.1.3:8002"));
  await d.add("alpha", (req) => (req.op === "metrics" ? a.json() : samplePrimaryStatus("alpha", "10.77.1.2:8002")));
  await d.add("beta", (req) => (req.op === "metrics" ? b.json() : samplePrimaryStatus("beta", "10.77.1.3:8002")));
  const { server } = await serve(t, d);
  const r = await get(server, "/metrics");
  assert.equal(r.status, 200);
  assert.match(r.type, /^text\/plain; version=0\.0\.4/);
  for (const vm of ["alpha", "beta"]) {
    assert.match(r.body, new RegExp(`^colo_checkpoints_total\\{reason="payload",vm="${vm}"\\} 1$`, "m"));
    assert.match(r.body, new RegExp(`^colo_checkpoint_pause_seconds_count\\{vm="${vm}"\\} 1$`, "m"));
    assert.match(r.body, new RegExp(`^colo_output_released_frames_total\\{cause="matched",vm="${vm}"\\} 900$`, "m"));
    assert.match(r.body, new RegExp(`^colo_lease_valid_seconds\\{vm="${vm}"\\} 0\\.82$`, "m"));
  }
  assert.match(r.body, /^colo_peer_state\{peer="10\.77\.1\.3:8002",replication="compare",state="connected",vm="beta"\} 1$/m);
  assert.equal(r.body.match(/^# TYPE colo_checkpoints_total counter$/gm)?.length, 1);
  assert.match(r.body, /^colo_scrape_daemons\{result="answered"\} 2$/m);
  assert.doesNotMatch(r.body, /colo_scrape_errors_total\{/);
});

test("colo serve: a daemon that does not answer is left out of the scrape within the bound and counted; so is one too old for the request", async (t) => {
  const d = await fakes(t);
  const ok = daemonMetrics("good", samplePrimaryStatus("good", "h2:8002"));
  await d.add("good", (req) => (req.op === "metrics" ? ok.json() : samplePrimaryStatus("good", "h2:8002")));
  await d.addSilent("stuck");
  await d.add("old", (req) => {
    if (req.op === "metrics") throw new Error('unknown op "metrics" (known: status, ...)');
    return sampleSecondaryStatus("old", "h1");
  });
  const { server, log } = await serve(t, d);
  for (const round of [1, 2]) {
    const t0 = monotonicMs();
    const r = await get(server, "/metrics");
    const took = monotonicMs() - t0;
    assert.ok(took < 1500, `a scrape waits for the silent daemon no longer than the bound (took ${Math.round(took)} ms)`);
    assert.equal(r.status, 200);
    assert.match(r.body, /^colo_checkpoints_total\{reason="payload",vm="good"\} 1$/m);
    assert.doesNotMatch(r.body, /vm="stuck"\}(?! )/); // only in the scrape errors
    assert.match(r.body, new RegExp(`^colo_scrape_errors_total\\{vm="stuck",cause="timeout"\\} ${round}$`, "m"));
    assert.match(r.body, new RegExp(`^colo_scrape_errors_total\\{vm="old",cause="refused"\\} ${round}$`, "m"));
    assert.match(r.body, /^colo_scrape_daemons\{result="failed"\} 2$/m);
  }
  assert.ok(log.some((l) => /left out of the scrape: stuck: no answer within 300 ms/.test(l)), log.join("\n"));
  // The status poll shows the silent daemon's error and the others' status as they answered it.
  const view = JSON.parse((await get(server, "/api/status")).body) as { vms: { name: string; status?: unknown; error?: string }[] };
  assert.deepEqual(
    view.vms.map((v) => v.name),
    ["good", "old", "stuck"],
  );
  assert.match(view.vms[2]?.error ?? "", /stuck: no answer within 300 ms/);
  assert.deepEqual(view.vms[1]?.status, sampleSecondaryStatus("old", "h1"));
});

test("colo serve: /api/status has each daemon's status as it answered and its checkpoint history; the page and its files; 404 and 405", async (t) => {
  const d = await fakes(t);
  const status = samplePrimaryStatus("guest", "10.77.1.2:8002");
  await d.add("guest", () => status);
  const { server } = await serve(t, d);
  const r = await get(server, "/api/status");
  assert.equal(r.status, 200);
  assert.match(r.type, /^application\/json/);
  const view = JSON.parse(r.body) as { windowSeconds: number; vms: { name: string; pid: number; status: unknown; history: { checkpoint: number; reason?: string; secondsAgo: number }[] }[] };
  assert.equal(view.windowSeconds, 600);
  assert.equal(view.vms.length, 1);
  assert.equal(view.vms[0]?.pid, d.pid);
  assert.deepEqual(view.vms[0]?.status, status);
  assert.deepEqual(
    view.vms[0]?.history.map((h) => [h.checkpoint, h.reason]),
    [
      [0, "initial"],
      [1, "payload"],
      [2, "timeout"],
      [3, "payload"],
    ],
  );
  const page = await get(server, "/");
  assert.equal(page.status, 200);
  assert.match(page.type, /^text\/html/);
  assert.match(page.body, /<script src="\/app\.js" defer><\/script>/);
  assert.match((await get(server, "/app.js")).body, /fetch\("\/api\/status"/);
  assert.match((await get(server, "/style.css")).type, /^text\/css/);
  assert.equal((await get(server, "/nothing")).status, 404);
  assert.equal((await get(server, "/metrics", "POST")).status, 405);
});

test("colo serve: a port in use is one error naming the address (the server, and the CLI's one line and exit 1)", async (t) => {
  const holder = createServer();
  await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", () => resolve()));
  t.after(() => new Promise<void>((resolve) => holder.close(() => resolve())));
  const port = (holder.address() as AddressInfo).port;
  await assert.rejects(
    ServeServer.listen({ host: "127.0.0.1", port }),
    (e: unknown) => e instanceof ServeError && e.code === "ADDRESS_IN_USE" && e.message === `cannot listen on 127.0.0.1:${port}: the address is in use (another colo serve, or another program)`,
  );
  const cli = spawn(COLO, ["serve", "--listen", `127.0.0.1:${port}`], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, COLO_RUN_DIR: "/nonexistent-colo-run" } });
  let stderr = "";
  cli.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  const code = await new Promise<number | null>((resolve) => cli.on("close", (c) => resolve(c)));
  assert.equal(code, 1);
  assert.equal(stderr, `colo: cannot listen on 127.0.0.1:${port}: the address is in use (another colo serve, or another program)\n`);
});

test("checkpoint history: deduplicated across polls, placed by msAgo, a new session's numbers kept apart, trimmed to the window", () => {
  const h = new CheckpointHistory(60_000);
  const rec = (checkpoint: number, msAgo: number, at = `2026-01-01T00:00:${String(checkpoint).padStart(2, "0")}.000Z`) => ({ checkpoint, reason: "payload", pauseMs: 40, pages: 3, bytes: 9, at, msAgo });
  h.add({ replication: { recentCheckpoints: [rec(1, 3000), rec(2, 1000)] } }, 100_000);
  h.add({ replication: { recentCheckpoints: [rec(1, 4000), rec(2, 2000), rec(3, 500)] } }, 101_000);
  assert.deepEqual(
    h.view(101_000).map((p) => [p.checkpoint, p.secondsAgo]),
    [
      [1, 4],
      [2, 2],
      [3, 0.5],
    ],
  );
  // Replication started again: checkpoint 1 again, another instant.
  h.add({ replication: { recentCheckpoints: [rec(1, 100, "2026-01-01T00:05:00.000Z")] } }, 102_000);
  assert.equal(h.view(102_000).length, 4);
  // Past the window: gone.
  assert.deepEqual(
    h.view(159_500).map((p) => p.checkpoint),
    [3, 1],
  );
  h.add({ state: "running" }, 160_000); // no replication: nothing added
  assert.equal(h.view(160_000).length, 2);
});

test("metrics answers: a daemon's answer is checked before it is merged", () => {
  assert.deepEqual(parseMetricsAnswer([{ name: "colo_x_total", help: "x", type: "counter", aggregator: "sum", values: [{ value: 2, labels: { vm: "a" } }] }]), [
    { name: "colo_x_total", help: "x", type: "counter", aggregator: "sum", values: [{ value: 2, labels: { vm: "a" } }] },
  ]);
  const bad: [unknown, RegExp][] = [
    [{}, /not an array/],
    [[{ name: "bad name", help: "", type: "counter", values: [] }], /bad name/],
    [[{ name: "x", help: "", type: "untyped", values: [] }], /unknown type/],
    [[{ name: "x", help: "", type: "gauge", aggregator: "median", values: [] }], /unknown aggregator/],
    [[{ name: "x", help: "", type: "gauge", values: [{ value: "1" }] }], /has no number/],
    [[{ name: "x", help: "", type: "gauge", values: [{ value: 1, labels: { "a-b": "c" } }] }], /bad label/],
  ];
  for (const [answer, re] of bad) assert.throws(() => parseMetricsAnswer(answer), (e: unknown) => e instanceof MetricsAnswerError && re.test(e.message));
});
