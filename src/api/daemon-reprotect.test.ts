import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import { nextPrimaryRequest, Reprotector, REPROTECT_FIRST_BACKOFF_MS, REPROTECT_MAX_BACKOFF_MS, survivorRequest, type RemusRequest, type ReprotectDaemon } from "./daemon-reprotect.js";
import { parseRequest } from "./protocol.js";

const base: RemusRequest = {
  op: "remus",
  mode: "compare",
  host: "10.77.1.2",
  port: 8002,
  keyFile: "/k",
  intervalMs: 1000,
  timeoutMs: 1000,
  heartbeatMs: 200,
  configPath: "/cfg/h2.cfg",
  reprotect: { host: "10.77.1.1", port: 8002 },
};

/** A daemon whose protect() answers from `outcomes` in turn (then fails with "down"); every sleep is recorded and returns at once. */
function fakeDaemon(outcomes: (Error | "ok")[], opts: { states?: string[] } = {}) {
  const lines: { level: number; msg: string; err?: string }[] = [];
  const log = pino({ level: "info" }, { write: (s: string) => lines.push(JSON.parse(s) as { level: number; msg: string; err?: string }) });
  const sleeps: number[] = [];
  const requests: RemusRequest[] = [];
  const states = [...(opts.states ?? [])];
  let mode: string | undefined = "unprotected";
  let finished!: () => void;
  const done = new Promise<void>((r) => (finished = r));
  const daemon: ReprotectDaemon = {
    log,
    vmState: () => states.shift() ?? "running",
    sessionMode: () => mode,
    exiting: () => false,
    protect: (request) => {
      requests.push(request);
      const o = outcomes.shift() ?? new Error("down");
      if (o === "ok") {
        mode = "primary";
        finished();
        return Promise.resolve({ checkpoint0Pages: 7 });
      }
      return Promise.reject(o);
    },
  };
  const sleep = (ms: number, signal: AbortSignal) => {
    sleeps.push(ms);
    if (signal.aborted) finished();
    return new Promise<void>((r) => setImmediate(r));
  };
  return { daemon, lines, sleeps, requests, done, sleep, setMode: (m: string) => (mode = m) };
}

const settle = () => new Promise<void>((r) => setTimeout(r, 20));

test("reprotect: failed attempts are retried with a doubling back-off until one starts; one log line per distinct error", async () => {
  const refused = new Error("connect ECONNREFUSED 10.77.1.1:8002");
  const f = fakeDaemon([refused, refused, new Error("the secondary refused the config"), refused, "ok"]);
  const r = new Reprotector(f.daemon, f.sleep);
  r.begin(base, "primary lost");
  await f.done;
  await settle();
  assert.equal(f.requests.length, 5);
  assert.deepEqual(f.sleeps, [1000, 2000, 4000, 8000]);
  assert.deepEqual(r.status(), { to: "10.77.1.2:8002", state: "protected", attempts: 5, lastError: "connect ECONNREFUSED 10.77.1.1:8002", after: "primary lost", started: { checkpoint0Pages: 7 } });
  const failed = f.lines.filter((l) => l.msg === "re-protection: attempt failed").map((l) => l.err);
  assert.deepEqual(failed, [refused.message, "the secondary refused the config", refused.message], "a repeat of the same error is not logged again");
  assert.ok(f.lines.some((l) => l.msg === "re-protection: the VM is protected again"));
});

test("reprotect: the back-off stops doubling at its cap", async () => {
  const errors = Array.from({ length: 9 }, () => new Error("down"));
  const f = fakeDaemon([...errors, "ok"]);
  new Reprotector(f.daemon, f.sleep).begin(base, "x");
  await f.done;
  assert.equal(f.sleeps.at(-1), REPROTECT_MAX_BACKOFF_MS);
  assert.equal(f.sleeps[0], REPROTECT_FIRST_BACKOFF_MS);
  assert.ok(f.sleeps.every((s) => s <= REPROTECT_MAX_BACKOFF_MS));
});

test("reprotect: no attempt while the VM is not running yet (a takeover's resume); the wait is not an attempt", async () => {
  const f = fakeDaemon(["ok"], { states: ["paused", "paused"] });
  const r = new Reprotector(f.daemon, f.sleep);
  r.begin(base, "primary lost");
  await f.done;
  await settle();
  assert.equal(f.requests.length, 1);
  assert.equal(r.status()?.attempts, 1);
  assert.deepEqual(f.sleeps, [REPROTECT_FIRST_BACKOFF_MS, REPROTECT_FIRST_BACKOFF_MS]);
});

test("reprotect: a protection started by hand, a fence and a cancel each end the attempts; a second begin while one runs is ignored", async () => {
  {
    const f = fakeDaemon([new Error("down"), new Error("down"), new Error("down")]);
    const r = new Reprotector(f.daemon, f.sleep);
    r.begin(base, "a");
    r.begin({ ...base, host: "elsewhere" }, "b");
    await settle();
    f.setMode("primary"); // the operator ran colo protect
    await settle();
    const s = r.status();
    assert.equal(s?.state, "protected");
    assert.equal(s?.to, "10.77.1.2:8002", "the second begin did not replace the first");
    assert.ok(f.requests.every((q) => q.host === base.host));
  }
  {
    const f = fakeDaemon([new Error("down"), new Error("down"), new Error("down"), new Error("down")]);
    const r = new Reprotector(f.daemon, f.sleep);
    r.begin(base, "a");
    await settle();
    f.setMode("fenced");
    await settle();
    assert.deepEqual([r.status()?.state, r.status()?.lastError], ["given-up", "the VM is fenced"]);
  }
  {
    const errors = Array.from({ length: 50 }, () => new Error("down"));
    const f = fakeDaemon(errors);
    const r = new Reprotector(f.daemon, f.sleep);
    r.begin(base, "a");
    await settle();
    r.cancel("operator failover");
    const n = f.requests.length;
    await settle();
    assert.equal(r.status()?.state, "given-up");
    assert.ok(f.requests.length <= n + 1, "no attempts after the cancel (one may be under way)");
    // Once given up, a new loss begins again.
    r.begin(base, "lost again");
    try {
      assert.equal(r.status()?.state, "trying", "the first attempt goes at once");
      assert.equal(r.status()?.after, "lost again");
    } finally {
      r.cancel("end");
    }
  }
});

test("reprotect: the requests a survivor and a primary send are ones the daemon's protocol accepts", () => {
  const next = nextPrimaryRequest(base);
  assert.deepEqual(next, { ...base, host: "10.77.1.1", port: 8002, configPath: "/cfg/h2.cfg" });
  assert.deepEqual(nextPrimaryRequest({ ...base, reprotect: { host: "h3", port: 9, configPath: "/cfg/h3.cfg" } })?.configPath, "/cfg/h3.cfg");
  assert.equal(nextPrimaryRequest({ ...base, reprotect: undefined }), undefined);
  assert.deepEqual(parseRequest(JSON.stringify(next)), next);
  const defaults = { intervalMs: 100, compareTimeoutMs: 300, minGapMs: 50, maxIntervalMs: 5000 };
  for (const mode of ["compare", "remus"] as const) {
    const s = survivorRequest(mode, { keyFile: "/k", timeoutMs: 1000, heartbeatMs: 200, arbiter: "10.77.0.1:8003", reprotect: { host: "10.77.1.1", port: 8002, configPath: "/cfg/h1.cfg" } }, defaults);
    assert.equal(s.mode, mode);
    assert.equal(s.host, "10.77.1.1");
    assert.equal(s.configPath, "/cfg/h1.cfg");
    assert.deepEqual(s.reprotect, { host: "10.77.1.1", port: 8002, configPath: "/cfg/h1.cfg" }, "the next session re-protects toward the same host");
    assert.equal(typeof s.leaseMs, "number");
    assert.deepEqual(parseRequest(JSON.stringify(s)), s);
  }
});
