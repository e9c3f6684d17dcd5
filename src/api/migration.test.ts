/**
 * `colo migrate-receive` (plain and --colo) against bad peers: real sockets
 * on 127.0.0.1, real TLS-PSK, no VM. Each bad connection is dropped and
 * reported (peer, what was wrong, where in the stream); the listener waits
 * on, and the good source that comes next is the migration; once it is,
 * the port refuses connections.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { connect as netConnect, type Socket } from "node:net";
import { afterEach, test } from "node:test";
import type { TLSSocket } from "node:tls";
import { ChannelError, connectSecure, type Endpoint } from "../channel/secure-channel.js";
import { encodeRecordHeader } from "../state/framing.js";
import { machineHeader, MemorySink, StreamWriter, TOOLSTACK_RECORD, type VmConfigInput } from "../state/index.js";
import { SAMPLE_VM_CONFIG } from "../state/testing.js";
import { acceptIncoming, describeRejected, type Incoming, type RejectedPeer } from "./migration.js";

const LOCAL = { host: "127.0.0.1", port: 0 };

/** Every client socket a test opened, closed after it (a bad peer that does not read would keep its half-closed socket). */
const clients = new Set<Socket>();
afterEach(() => {
  for (const c of clients) c.destroy();
  clients.clear();
});
/** Octets of the toolstack header: VM_CONFIG starts here. */
const HEADER = 16;

/** The start of a migration stream: the toolstack header and VM_CONFIG. */
async function streamStart(config: VmConfigInput = SAMPLE_VM_CONFIG): Promise<Uint8Array> {
  const sink = new MemorySink();
  const writer = new StreamWriter(sink, { machine: machineHeader("emu", 8 * 4096) });
  await writer.writeVmConfig(config);
  await writer.flush();
  return sink.bytes();
}

interface Receiver {
  address: Endpoint;
  incoming: Promise<Incoming>;
  rejected: RejectedPeer[];
  /** Resolves once `n` connections were dropped. */
  dropped(n: number): Promise<void>;
}

async function receiver(key: Buffer, opts: { timeoutMs?: number; greetingTimeoutMs?: number } = {}): Promise<Receiver> {
  const rejected: RejectedPeer[] = [];
  const waiters: (() => void)[] = [];
  let listening!: (a: Endpoint) => void;
  const address = new Promise<Endpoint>((r) => (listening = r));
  const incoming = acceptIncoming(LOCAL, key, opts.timeoutMs ?? 8000, listening, {
    greetingTimeoutMs: opts.greetingTimeoutMs ?? 2000,
    onRejected: (r) => {
      rejected.push(r);
      for (const w of waiters.splice(0)) w();
    },
  });
  incoming.catch(() => undefined); // awaited by the tests that expect a failure
  const dropped = async (n: number) => {
    while (rejected.length < n) await new Promise<void>((r) => waiters.push(r));
  };
  return { address: await address, incoming, rejected, dropped };
}

/** Connects with `key` and sends `bytes` (then ends the connection when `end`). */
async function sendSecure(at: Endpoint, key: Buffer, bytes: Uint8Array, end = false): Promise<TLSSocket> {
  const s = await connectSecure(at, key, 2000);
  clients.add(s);
  s.on("error", () => undefined);
  if (end) s.end(bytes);
  else s.write(bytes);
  return s;
}

/** A plain TCP connection (no TLS) that sends `bytes`. */
async function sendRaw(at: Endpoint, bytes: Uint8Array | undefined, end: boolean): Promise<Socket> {
  const s = netConnect(at.port, at.host);
  clients.add(s);
  await new Promise<void>((resolve, reject) => {
    s.once("connect", resolve);
    s.once("error", reject);
  });
  s.on("error", () => undefined);
  if (bytes && end) s.end(bytes);
  else if (bytes) s.write(bytes);
  return s;
}

/** The refusal line an authenticated source gets before the destination hangs up. */
function refusal(s: TLSSocket): Promise<string> {
  return new Promise((resolve) => {
    let text = "";
    s.on("data", (c: Buffer) => (text += c.toString()));
    s.on("close", () => resolve(text));
  });
}

/** The good source: its VM_CONFIG is accepted; the migration is its connection. */
async function goodSource(r: Receiver, key: Buffer): Promise<void> {
  const good = await sendSecure(r.address, key, await streamStart());
  try {
    const inc = await r.incoming;
    assert.equal(inc.config.name, "guest");
    assert.equal(inc.config.memoryMiB, 160);
    assert.deepEqual(inc.source, { path: SAMPLE_VM_CONFIG.path, text: SAMPLE_VM_CONFIG.text });
    assert.equal(inc.peer, `127.0.0.1:${good.localPort}`);
    inc.socket.destroy();
  } finally {
    good.destroy();
  }
}

interface BadPeer {
  name: string;
  /** Connects and misbehaves; the local port when the test can know it. */
  act(at: Endpoint, key: Buffer): Promise<number | undefined>;
  code: string;
  reason: RegExp;
  offset?: number;
  /** Shorter than the 2 s default: the case is about it. */
  greetingTimeoutMs?: number;
}

const VM_CONFIG_TYPE = TOOLSTACK_RECORD.VM_CONFIG;

const badPeers: BadPeer[] = [
  {
    name: "another key",
    act: async (at) => {
      await assert.rejects(connectSecure(at, randomBytes(32), 2000), (e: unknown) => e instanceof ChannelError && e.code === "AUTH");
      return undefined;
    },
    code: "AUTH",
    reason: /^authentication failed \(the peer has another key\)$/,
  },
  {
    name: "random bytes instead of TLS",
    act: async (at) => (await sendRaw(at, randomBytes(512), true)).localPort,
    code: "IO",
    reason: /^(TLS handshake failed: .+ \(not a colo peer\?\)|the peer closed the connection during the TLS handshake)$/,
  },
  {
    name: "a TCP peer that sends nothing",
    act: async (at) => (await sendRaw(at, undefined, false)).localPort,
    code: "TIMEOUT",
    reason: /^no TLS handshake within 300 ms$/,
    greetingTimeoutMs: 300,
  },
  {
    name: "an authenticated peer that sends nothing",
    act: async (at, key) => (await sendSecure(at, key, new Uint8Array(0))).localPort,
    code: "TIMEOUT",
    reason: /^no VM_CONFIG within 300 ms of the handshake \(0 octets read\)$/,
    greetingTimeoutMs: 300,
  },
  {
    name: "random bytes over TLS (not a stream)",
    act: async (at, key) => (await sendSecure(at, key, randomBytes(512))).localPort,
    code: "BAD_MAGIC",
    reason: /^stream offset 0: toolstack header: /,
    offset: 0,
  },
  {
    name: "a truncated VM_CONFIG",
    act: async (at, key) => {
      const start = await streamStart();
      return (await sendSecure(at, key, start.subarray(0, start.length - 100), true)).localPort;
    },
    code: "TRUNCATED",
    reason: /^stream offset 16: toolstack record VM_CONFIG \(0x00000200\): the stream ended after \d+ of \d+ octets$/,
    offset: HEADER,
  },
  {
    name: "a record length over the limit of any record (no body follows: refused on its header)",
    act: async (at, key) => {
      const start = await streamStart();
      const bytes = Buffer.concat([start.subarray(0, HEADER), encodeRecordHeader(VM_CONFIG_TYPE, 0xffff_fff8)]);
      return (await sendSecure(at, key, bytes)).localPort;
    },
    code: "BAD_LENGTH",
    reason: /^stream offset 16: toolstack record VM_CONFIG \(0x00000200\): body_length 4294967288 exceeds the limit of 67108864 for any record$/,
    offset: HEADER,
  },
  {
    name: "a VM_CONFIG length over the type's limit",
    act: async (at, key) => {
      const start = await streamStart();
      const bytes = Buffer.concat([start.subarray(0, HEADER), encodeRecordHeader(VM_CONFIG_TYPE, 1_000_000)]);
      return (await sendSecure(at, key, bytes)).localPort;
    },
    code: "BAD_LENGTH",
    reason: /^stream offset 16: toolstack record VM_CONFIG \(0x00000200\): body_length 1000000, VM_CONFIG takes 10 to 69640$/,
    offset: HEADER,
  },
  {
    name: "a VM_CONFIG that is not a valid configuration",
    act: async (at, key) => (await sendSecure(at, key, await streamStart({ path: "/srv/bad.cfg", text: "memory = lots\n" }))).localPort,
    code: "CONFIG",
    reason: /^invalid VM_CONFIG: \/srv\/bad\.cfg:1: memory: /,
  },
];

for (const bad of badPeers) {
  test(`migrate-receive: ${bad.name} is dropped and logged; the good source after it is the migration`, { timeout: 10_000 }, async () => {
    const key = randomBytes(32);
    const r = await receiver(key, bad.greetingTimeoutMs === undefined ? {} : { greetingTimeoutMs: bad.greetingTimeoutMs });
    const port = await bad.act(r.address, key);
    await r.dropped(1);
    const [dropped] = r.rejected;
    assert.ok(dropped);
    assert.equal(dropped.code, bad.code, dropped.reason);
    assert.match(dropped.reason, bad.reason);
    assert.equal(dropped.offset, bad.offset);
    assert.match(dropped.peer, port === undefined ? /^127\.0\.0\.1:\d+$/ : new RegExp(`^127\\.0\\.0\\.1:${port}$`));
    assert.equal(describeRejected(dropped), `connection from ${dropped.peer} dropped: ${dropped.reason}`);
    assert.ok(!describeRejected(dropped).includes("\n"), "one line");
    await goodSource(r, key);
    assert.equal(r.rejected.length, 1, "the good source is not dropped");
  });
}

test("migrate-receive: an oversized record is refused on its header, well before the greeting timeout", { timeout: 10_000 }, async () => {
  const key = randomBytes(32);
  const r = await receiver(key, { greetingTimeoutMs: 5000 });
  const start = await streamStart();
  const t0 = performance.now();
  const s = await sendSecure(r.address, key, Buffer.concat([start.subarray(0, HEADER), encodeRecordHeader(VM_CONFIG_TYPE, 70_000)]));
  const answer = refusal(s);
  await r.dropped(1);
  assert.ok(performance.now() - t0 < 2000);
  assert.equal(r.rejected[0]?.code, "BAD_LENGTH");
  // An authenticated source is told why before the destination hangs up (colo migrate prints it).
  assert.deepEqual(JSON.parse(await answer), { ok: false, error: r.rejected[0]?.reason });
  await goodSource(r, key);
});

test("migrate-receive: every kind of bad peer at once, then a good source; the port refuses connections after it", { timeout: 10_000 }, async () => {
  const key = randomBytes(32);
  const r = await receiver(key, { greetingTimeoutMs: 300 });
  for (const bad of badPeers) await bad.act(r.address, key);
  await r.dropped(badPeers.length);
  assert.deepEqual(r.rejected.map((x) => x.code).sort(), badPeers.map((b) => b.code).sort());
  await goodSource(r, key);
  // The session's one connection is the accepted one: the listener is closed.
  await assert.rejects(connectSecure(r.address, key, 2000), (e: unknown) => e instanceof ChannelError && e.code === "REFUSED");
  await assert.rejects(sendRaw(r.address, undefined, false), /ECONNREFUSED/);
});

test("migrate-receive: a source still greeting when another is accepted is dropped (superseded)", { timeout: 10_000 }, async () => {
  const key = randomBytes(32);
  const r = await receiver(key, { greetingTimeoutMs: 5000 });
  const slow = await sendSecure(r.address, key, new Uint8Array(0));
  const slowAnswer = refusal(slow);
  await new Promise((resolve) => setTimeout(resolve, 50)); // its handshake is seen by the listener
  await goodSource(r, key);
  await r.dropped(1);
  assert.equal(r.rejected[0]?.code, "SUPERSEDED");
  assert.equal(r.rejected[0]?.peer, `127.0.0.1:${slow.localPort}`);
  await slowAnswer; // its connection is closed
});

test("migrate-receive: no good source before the timeout; the error says how many were dropped and the last one", { timeout: 10_000 }, async () => {
  const key = randomBytes(32);
  const r = await receiver(key, { timeoutMs: 800, greetingTimeoutMs: 300 });
  await sendSecure(r.address, key, randomBytes(64));
  await assert.rejects(r.incoming, (e: unknown) => {
    assert.ok(e instanceof ChannelError);
    assert.equal(e.code, "TIMEOUT");
    assert.match(e.message, /^no migration arrived within 0\.8 s \(1 connection dropped, the last: connection from 127\.0\.0\.1:\d+ dropped: stream offset 0: toolstack header: /);
    return true;
  });
  await assert.rejects(connectSecure(r.address, key, 2000), (e: unknown) => e instanceof ChannelError && e.code === "REFUSED");
});

test("migrate-receive --colo: once the primary's connection is accepted, a second connection is refused; the accepted one carries on", { timeout: 10_000 }, async () => {
  const key = randomBytes(32);
  const r = await receiver(key);
  const primary = await sendSecure(r.address, key, await streamStart());
  const inc = await r.incoming;
  try {
    await assert.rejects(connectSecure(r.address, key, 2000), (e: unknown) => e instanceof ChannelError && e.code === "REFUSED");
    await assert.rejects(sendRaw(r.address, randomBytes(16), true), /ECONNREFUSED/);
    assert.deepEqual(r.rejected, [], "refused by the kernel: the listener is closed, nothing reaches acceptIncoming");
    const line = new Promise<string>((resolve) => primary.once("data", (c: Buffer) => resolve(c.toString())));
    await inc.answer({ ok: true, resumeMs: 1 });
    assert.equal(await line, '{"ok":true,"resumeMs":1}\n');
  } finally {
    inc.socket.destroy();
  }
});
