import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { connectSecure } from "../channel/secure-channel.js";
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
    const deadline = Date.now() + 2000;
    while (answers.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
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
  const t0 = Date.now();
  await assert.rejects(late.acquire("vm", "p", 1000, false));
  assert.ok(Date.now() - t0 < 2000);
  late.close();
});
