import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { connectSecure } from "../channel/secure-channel.js";
import { monotonicMs } from "../sys/clock.js";
import { steppedWallClock } from "../sys/clock-testing.js";
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

test("arbiter: a lease runs out on the arbiter's monotonic clock, counted from the request it got; the wall clock is never read", async (t) => {
  const wall = steppedWallClock(t);
  let now = 50_000;
  const key = randomBytes(32);
  const server = await ArbiterServer.listen({ host: "127.0.0.1", port: 0 }, key, () => {}, () => now);
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
