import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { connect as netConnect, type Socket } from "node:net";
import { test } from "node:test";
import type { TLSSocket } from "node:tls";
import { connectSecure, type Endpoint } from "../channel/secure-channel.js";
import { monotonicMs } from "../sys/clock.js";
import { steppedWallClock } from "../sys/clock-testing.js";
import { checkLeaseRule, checkOneWinner, fakeClockHarness } from "../colo/lease-rule-testing.js";
import { ArbiterClient, ArbiterServer } from "./arbiter.js";

test("arbiter over TLS-PSK: leases granted, refused, solo, released; bad requests answered with an error", async () => {
  const key = randomBytes(32);
  const server = await ArbiterServer.listen({ host: "127.0.0.1", port: 0 }, key);
  const p = new ArbiterClient(server.address, key);
  const s = new ArbiterClient(server.address, key);
  try {
    assert.deepEqual(await p.acquire("vm", "p", 1000, false), { granted: true, solo: false, holder: "p", remainingMs: 1000 });
    const refused = await s.acquire("vm", "s", 1000, true);
    assert.equal(refused.granted, false);
    assert.equal(refused.holder, "p");
    assert.equal((await p.acquire("vm", "p", 1000, true)).solo, true);
    assert.deepEqual(((await s.list()) as { vm: string; solo: boolean }[]).map((l) => [l.vm, l.solo]), [["vm", true]]);
    await p.release("vm", "p");
    assert.equal((await s.acquire("vm", "s", 1000, false)).granted, true);

    // A malformed request: an error line, the connection stays usable.
    const raw = await connectSecure(server.address, key);
    const answers: string[] = [];
    raw.on("data", (c: Buffer) => answers.push(...c.toString().trim().split("\n")));
    raw.write('{"id":7,"op":"acquire","vm":"x","holder":"h","ttlMs":1,"solo":false}\n');
    raw.write("not json\n");
    raw.write('{"id":8,"op":"list"}\n');
    const deadline = monotonicMs() + 2000;
    while (answers.length < 3 && monotonicMs() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.match(answers[0] ?? "", /"id":7,"error":"\\"ttlMs\\" must be an integer 10..600000"/);
    assert.match(answers[1] ?? "", /"error"/);
    assert.match(answers[2] ?? "", /"id":8,"leases"/);
    raw.destroy();

    // The wrong key: refused by the TLS handshake.
    const stranger = new ArbiterClient(server.address, randomBytes(32));
    await assert.rejects(stranger.acquire("vm", "x", 1000, false));
    stranger.close();
  } finally {
    p.close();
    s.close();
    await server.close();
  }
  // Arbiter gone: a request fails fast instead of hanging.
  const late = new ArbiterClient(server.address, key);
  const t0 = monotonicMs();
  await assert.rejects(late.acquire("vm", "p", 1000, false));
  assert.ok(monotonicMs() - t0 < 2000);
  late.close();
});

test("arbiter: a holder's connection closing (its process died) frees its lease for another at once; not a solo one, not one renewed over a new connection", async () => {
  const key = randomBytes(32);
  const logs: string[] = [];
  const server = await ArbiterServer.listen({ host: "127.0.0.1", port: 0 }, key, (m) => logs.push(m));
  const s = new ArbiterClient(server.address, key);
  const until = async (what: string, fn: () => Promise<boolean>) => {
    const deadline = monotonicMs() + 5000;
    while (!(await fn())) {
      if (monotonicMs() > deadline) throw new Error(`not within 5 s: ${what}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  try {
    const p = new ArbiterClient(server.address, key);
    assert.equal((await p.acquire("vm", "p", 60_000, false)).granted, true);
    assert.equal((await s.acquire("vm", "s", 60_000, true)).granted, false, "a live holder's lease: refused");
    p.close();
    await until("the takeover granted after the holder's connection closed", async () => (await s.acquire("vm", "s", 60_000, true)).granted);
    assert.ok(logs.some((l) => /lease of vm: the connection of its holder p .* closed/.test(l)), logs.join("\n"));

    // Solo: the holder ran alone; its connection closing frees nothing.
    const q = new ArbiterClient(server.address, key);
    assert.equal((await q.acquire("solo-vm", "q", 60_000, true)).granted, true);
    q.close();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal((await s.acquire("solo-vm", "s", 60_000, true)).granted, false);

    // Renewed over a second connection: the first one's close frees nothing.
    const r1 = new ArbiterClient(server.address, key);
    const r2 = new ArbiterClient(server.address, key);
    assert.equal((await r1.acquire("moved", "r", 60_000, false)).granted, true);
    assert.equal((await r2.acquire("moved", "r", 60_000, false)).granted, true);
    r1.close();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal((await s.acquire("moved", "s", 60_000, true)).granted, false);
    r2.close();
    await until("freed once the connection it was renewed over closed", async () => (await s.acquire("moved", "s", 60_000, true)).granted);
  } finally {
    s.close();
    await server.close();
  }
});

test("arbiter: a late request over a holder's older connection is ignored: it cannot clear the solo mark asked since over a newer one", async () => {
  const key = randomBytes(32);
  const server = await ArbiterServer.listen({ host: "127.0.0.1", port: 0 }, key);
  const s = new ArbiterClient(server.address, key);
  const lines = async (socket: TLSSocket, n: number): Promise<string[]> => {
    const got: string[] = [];
    let buf = "";
    socket.on("data", (c: Buffer) => {
      buf += c.toString();
      const parts = buf.split("\n");
      buf = parts.pop() ?? "";
      got.push(...parts);
    });
    const deadline = monotonicMs() + 5000;
    while (got.length < n && monotonicMs() < deadline) await new Promise((r) => setTimeout(r, 5));
    return got;
  };
  try {
    const old = await connectSecure(server.address, key);
    const oldAnswers = lines(old, 1);
    old.write('{"id":1,"op":"acquire","vm":"vm","holder":"p","ttlMs":60000,"solo":false}\n');
    assert.match((await oldAnswers)[0] ?? "", /"granted":true/);
    const fresh = await connectSecure(server.address, key);
    const freshAnswers = lines(fresh, 1);
    fresh.write('{"id":2,"op":"acquire","vm":"vm","holder":"p","ttlMs":60000,"solo":true}\n');
    assert.match((await freshAnswers)[0] ?? "", /"granted":true,"solo":true/);
    // The renewal that was on its way over the old connection arrives now: ignored, the mark stays.
    const late = lines(old, 2);
    old.write('{"id":3,"op":"acquire","vm":"vm","holder":"p","ttlMs":60000,"solo":false}\n');
    old.write('{"id":4,"op":"release","vm":"vm","holder":"p"}\n');
    const [a3, a4] = await late;
    assert.match(a3 ?? "", /"id":3,"error":"a acquire of vm over an older connection of p .*: ignored"/);
    assert.match(a4 ?? "", /"id":4,"error":"a release of vm over an older connection/);
    old.destroy();
    await new Promise((r) => setTimeout(r, 100));
    const refused = await s.acquire("vm", "s", 60_000, true);
    assert.deepEqual([refused.granted, refused.solo], [false, true], "still solo, still held: no takeover");
    fresh.destroy();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal((await s.acquire("vm", "s", 60_000, true)).granted, false, "a solo lease is not freed by its connection closing");
  } finally {
    s.close();
    await server.close();
  }
});

test("arbiter: a lease runs out on the arbiter's monotonic clock, counted from the request it got; the wall clock is never read", async (t) => {
  const wall = steppedWallClock(t);
  let now = 50_000;
  const key = randomBytes(32);
  const server = await ArbiterServer.listen({ host: "127.0.0.1", port: 0 }, key, () => {}, {}, () => now);
  const p = new ArbiterClient(server.address, key);
  const s = new ArbiterClient(server.address, key);
  try {
    assert.equal((await p.acquire("vm", "p", 1000, false)).granted, true);
    wall.jump(3_600_000); // the arbiter host's wall clock jumps an hour ahead: the lease runs on
    now += 999;
    assert.deepEqual(await s.acquire("vm", "s", 1000, false), { granted: false, solo: false, holder: "p", remainingMs: 1 });
    wall.jump(-7_200_000); // and an hour behind: the lease ends on time all the same
    now += 1;
    assert.equal((await s.acquire("vm", "s", 1000, false)).granted, true, "1000 ms on the arbiter's clock: expired");
    assert.deepEqual(((await s.list()) as { holder: string; remainingMs: number }[]).map((l) => [l.holder, l.remainingMs]), [["s", 1000]]);
    assert.equal(wall.reads(), 0, "the arbiter and its clients never read the wall clock");
  } finally {
    p.close();
    s.close();
    await server.close();
  }
});

/** An authenticated peer's connection and what it was answered, until the arbiter hangs up. */
async function rawPeer(at: Endpoint, key: Buffer): Promise<{ socket: TLSSocket; port: number | undefined; answers: Promise<string[]> }> {
  const socket = await connectSecure(at, key, 2000);
  const port = socket.localPort; // gone once closed
  socket.on("error", () => undefined);
  let text = "";
  socket.on("data", (c: Buffer) => (text += c.toString()));
  const answers = new Promise<string[]>((resolve) => socket.on("close", () => resolve(text.split("\n").filter((l) => l.length > 0))));
  return { socket, port, answers };
}

async function tcpPeer(at: Endpoint, bytes: Uint8Array | undefined): Promise<Socket> {
  const socket = netConnect(at.port, at.host);
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  socket.on("error", () => undefined);
  if (bytes) socket.end(bytes);
  return socket;
}

async function until(what: string, cond: () => boolean, ms = 3000): Promise<void> {
  const t0 = performance.now();
  while (!cond()) {
    if (performance.now() - t0 > ms) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test("arbiter: bad peers are dropped and logged, one line each; a good holder's lease stays granted and renewable across them", { timeout: 20_000 }, async () => {
  const key = randomBytes(32);
  const log: string[] = [];
  const server = await ArbiterServer.listen({ host: "127.0.0.1", port: 0 }, key, (m) => log.push(m), { handshakeTimeoutMs: 200, partialLineTimeoutMs: 200 });
  const holder = new ArbiterClient(server.address, key);
  const other = new ArbiterClient(server.address, key);
  const opened: Socket[] = [];
  const renewals: boolean[] = [];
  let renewing = true;
  const renewer = (async () => {
    while (renewing) {
      renewals.push((await holder.acquire("web", "primary@h1", 400, false)).granted);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const logged = (re: RegExp) => until(`a log line ${re}`, () => log.some((l) => re.test(l)));
  try {
    await until("the first renewal", () => renewals.length > 0);

    // Another key, random bytes, a silent TCP peer: refused by the handshake.
    const stranger = new ArbiterClient(server.address, randomBytes(32));
    await assert.rejects(stranger.release("web", "primary@h1"));
    stranger.close();
    await logged(/^connection from 127\.0\.0\.1:\d+ rejected: authentication failed \(the peer has another key\)$/);
    const noise = await tcpPeer(server.address, randomBytes(300));
    opened.push(noise);
    await logged(new RegExp(`^connection from 127\\.0\\.0\\.1:${noise.localPort} rejected: (TLS handshake failed: |the peer closed)`));
    const silent = await tcpPeer(server.address, undefined);
    opened.push(silent);
    await logged(new RegExp(`^connection from 127\\.0\\.0\\.1:${silent.localPort} rejected: no TLS handshake within 200 ms$`));

    // A line over 4096 bytes: never buffered whole; an error answer, then the connection is dropped.
    const big = await rawPeer(server.address, key);
    big.socket.write("x".repeat(5000));
    assert.deepEqual(await big.answers, ['{"id":null,"error":"a request line longer than 4096 bytes"}']);
    assert.ok(log.includes(`connection from 127.0.0.1:${big.port} dropped: a request line longer than 4096 bytes`));

    // A release cut before its newline: not acted on (readline would have run it at the end of the connection).
    const cut = await rawPeer(server.address, key);
    cut.socket.end('{"id":1,"op":"release","vm":"web","holder":"primary@h1"}');
    const why = "the connection ended inside a request (56 bytes without a newline): not acted on";
    assert.deepEqual(await cut.answers, [JSON.stringify({ id: null, error: why })]);
    assert.ok(log.includes(`connection from 127.0.0.1:${cut.port} dropped: ${why}`));

    // A line left unfinished: dropped after its timeout.
    const stalled = await rawPeer(server.address, key);
    stalled.socket.write('{"id":2,"op":"release","vm":"web",');
    assert.equal((await stalled.answers).length, 1);
    assert.ok(log.includes(`connection from 127.0.0.1:${stalled.port} dropped: a request line unfinished after 200 ms (34 bytes without a newline)`));

    // Bad JSON: an error answer and a log line; that connection stays up, nothing else changes.
    const junk = await rawPeer(server.address, key);
    junk.socket.write('{"id":3,"op":"release"\n{"id":4,"op":"list"}\n');
    await until("two answers", () => log.some((l) => l.startsWith(`request from 127.0.0.1:${junk.port}: `)));
    junk.socket.end();
    const [bad, listed] = await junk.answers;
    assert.match(bad ?? "", /^\{"id":null,"error":".+"\}$/);
    assert.match(listed ?? "", /^\{"id":4,"leases":\[\{"vm":"web","holder":"primary@h1","solo":false/);

    // The holder kept its lease throughout: every renewal granted, another holder refused, not solo.
    const before = renewals.length;
    await until("more renewals", () => renewals.length >= before + 3);
    assert.ok(renewals.every((g) => g), `renewals: ${renewals.join(",")}`);
    const refused = await other.acquire("web", "secondary@h2", 400, true);
    assert.equal(refused.granted, false);
    assert.equal(refused.holder, "primary@h1");
    assert.deepEqual(
      ((await other.list()) as { vm: string; holder: string; solo: boolean }[]).map((l) => [l.vm, l.holder, l.solo]),
      [["web", "primary@h1", false]],
    );
    assert.ok(log.every((l) => !l.includes("\n")), "one line each");
  } finally {
    renewing = false;
    await renewer;
    holder.close();
    other.close();
    for (const s of opened) s.destroy();
    await server.close();
  }
});

test("arbiter: the lease rule's table (lease-rule-testing.ts) over TLS-PSK, one client per holder, on the arbiter's clock", async () => {
  let now = 10_000;
  const key = randomBytes(32);
  const server = await ArbiterServer.listen({ host: "127.0.0.1", port: 0 }, key, () => {}, {}, () => now);
  const clients = new Map<string, ArbiterClient>();
  const client = (holder: string) => {
    let c = clients.get(holder);
    if (!c) clients.set(holder, (c = new ArbiterClient(server.address, key)));
    return c;
  };
  try {
    const h = fakeClockHarness(client, 1000, () => now, (ms) => (now += ms));
    await checkLeaseRule(h);
    await checkOneWinner(h, "race", ["a", "b", "c", "d", "e"]);
  } finally {
    for (const c of clients.values()) c.close();
    await server.close();
  }
});
