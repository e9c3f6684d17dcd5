/**
 * The `colo check` probe on a receiver's port: real sockets on 127.0.0.1,
 * real TLS-PSK, the real acceptIncoming with the daemon's probe handler, no
 * VM. The facts answer what a temp folder holds; RTT and bandwidth are
 * positive and bounded in time; a bad probe is dropped like a bad peer; and
 * the receiver still takes its real migration after probes.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, test } from "node:test";
import type { TLSSocket } from "node:tls";
import { ChannelError, connectSecure, type Endpoint } from "../channel/secure-channel.js";
import { emuCompatibilityDescriptor } from "../engine/emu/emu-engine.js";
import { machineHeader, MemorySink, StreamWriter } from "../state/index.js";
import { monotonicMs } from "../sys/clock.js";
import { serveProbe } from "./check-probe.js";
import { probeReceiver, ProbeError } from "./check-probe-client.js";
import { MAX_PROBE_REQUEST_BYTES, SINK_MAX_MS, type ReceiverRole } from "./check-protocol.js";
import { acceptIncoming, type Incoming, type RejectedPeer } from "./migration.js";

const LOCAL = { host: "127.0.0.1", port: 0 };
const KEY = randomBytes(32);
const ROLE: ReceiverRole = { colo: true, arbiter: "127.0.0.1:8003", leaseMs: 1000 };

let dir = "";
let runDirBefore: string | undefined;
before(() => {
  dir = mkdtempSync(join(tmpdir(), "colo-check-probe-"));
  runDirBefore = process.env.COLO_RUN_DIR;
  process.env.COLO_RUN_DIR = join(dir, "run");
  writeFileSync(join(dir, "vmlinuz"), Buffer.alloc(12_345, 1));
  writeFileSync(join(dir, "initrd.img"), Buffer.alloc(6_789, 2));
  writeFileSync(join(dir, "data.img"), Buffer.alloc(2 ** 20));
  writeFileSync(join(dir, "ro.img"), Buffer.alloc(512 * 3));
});
after(() => {
  if (runDirBefore === undefined) delete process.env.COLO_RUN_DIR;
  else process.env.COLO_RUN_DIR = runDirBefore;
  rmSync(dir, { recursive: true, force: true });
});

const clients = new Set<TLSSocket>();
afterEach(() => {
  for (const c of clients) c.destroy();
  clients.clear();
});

function configText(engine = "emu"): string {
  return [
    'name = "guest"',
    "memory = 96",
    `engine = "${engine}"`,
    'kernel = "vmlinuz"',
    'ramdisk = "initrd.img"',
    "disk = [ 'format=raw, vdev=hda, access=rw, target=data.img', 'format=raw, vdev=hdb, access=ro, target=ro.img' ]",
    "vif = [ 'bridge=colo-no-such-br' ]",
    "",
  ].join("\n");
}

interface Receiver {
  address: Endpoint;
  incoming: Promise<Incoming>;
  rejected: RejectedPeer[];
  probes: string[];
  /** Resolves once `n` probes were served or dropped. */
  seen(n: number): Promise<void>;
}

async function receiver(opts: { probe?: boolean; lineTimeoutMs?: number; greetingTimeoutMs?: number; sinkMaxMs?: number } = {}): Promise<Receiver> {
  const rejected: RejectedPeer[] = [];
  const probes: string[] = [];
  const waiters: (() => void)[] = [];
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  let listening!: (a: Endpoint) => void;
  const address = new Promise<Endpoint>((r) => (listening = r));
  const incoming = acceptIncoming(LOCAL, KEY, 15_000, listening, {
    greetingTimeoutMs: opts.greetingTimeoutMs ?? 2000,
    onRejected: (r) => {
      rejected.push(r);
      wake();
    },
    ...(opts.probe === false
      ? {}
      : {
          probe: (socket: TLSSocket) =>
            serveProbe(socket, { receiver: ROLE, ...(opts.lineTimeoutMs ? { lineTimeoutMs: opts.lineTimeoutMs } : {}), ...(opts.sinkMaxMs ? { sinkMaxMs: opts.sinkMaxMs } : {}) }),
          onProbe: (_peer: string, summary: string) => {
            probes.push(summary);
            wake();
          },
        }),
  });
  incoming.catch(() => undefined);
  const seen = async (n: number) => {
    while (rejected.length + probes.length < n) await new Promise<void>((r) => waiters.push(r));
  };
  return { address: await address, incoming, rejected, probes, seen };
}

/** The source of a real migration: its VM_CONFIG is accepted. */
async function migrationArrives(r: Receiver): Promise<void> {
  const sink = new MemorySink();
  const writer = new StreamWriter(sink, { machine: machineHeader("emu", 8 * 4096) });
  await writer.writeVmConfig({ path: join(dir, "guest.cfg"), text: configText() });
  await writer.flush();
  const s = await connectSecure(r.address, KEY, 2000);
  clients.add(s);
  s.on("error", () => undefined);
  s.write(sink.bytes());
  const inc = await r.incoming;
  assert.equal(inc.config.name, "guest");
  inc.socket.destroy();
}

test("probe: the facts are what the temp folder holds; RTT and bandwidth positive and bounded; then the real migration is accepted", async () => {
  const r = await receiver();
  const t0 = monotonicMs();
  const p = await probeReceiver(r.address, KEY, { path: join(dir, "guest.cfg"), text: configText() }, { sinkBytes: 8 * 2 ** 20, echoes: 8 });
  const took = monotonicMs() - t0;
  const f = p.facts;
  assert.deepEqual(f.receiver, ROLE);
  assert.deepEqual(f.config, { ok: true, name: "guest", engine: "emu", memoryMiB: 96, disks: 2 });
  assert.ok(f.engine && "descriptor" in f.engine);
  assert.equal(f.engine.descriptor, emuCompatibilityDescriptor());
  assert.equal(f.nameInUse, undefined);
  const file = (role: string, index?: number) => f.files.find((x) => x.role === role && x.index === index);
  assert.equal(file("kernel")?.bytes, 12_345);
  assert.equal(file("ramdisk")?.bytes, 6_789);
  assert.equal(file("disk", 0)?.bytes, 2 ** 20);
  assert.equal(file("disk", 0)?.usable, true);
  assert.equal(file("disk", 1)?.bytes, 1536);
  assert.equal(file("disk", 0)?.ino, statSync(join(dir, "data.img"), { bigint: true }).ino.toString());
  // Only the writable disk spills, into the run dir (which does not exist yet: its parent is asked).
  assert.equal(f.spill.length, 1);
  assert.equal(f.spill[0]?.dir, join(dir, "run", "guest.disk0"));
  assert.equal(f.spill[0]?.checked, dir);
  assert.ok((f.spill[0]?.freeBytes ?? 0) > 0);
  assert.deepEqual(f.bridges, [{ name: "colo-no-such-br", present: false }]);
  assert.ok("availableBytes" in f.memory && f.memory.availableBytes > 0 && f.memory.totalBytes >= f.memory.availableBytes);
  assert.equal(p.rtt.samples, 8);
  assert.ok(p.rtt.medianMs > 0 && p.rtt.minMs <= p.rtt.medianMs && p.rtt.medianMs <= p.rtt.maxMs && p.rtt.maxMs < 1000, JSON.stringify(p.rtt));
  assert.equal(p.bandwidth.bytes, 8 * 2 ** 20);
  assert.equal(p.bandwidth.timeLimited, false);
  assert.ok(p.bandwidth.ms > 0 && p.bandwidth.ms <= SINK_MAX_MS && p.bandwidth.bytesPerSec > 0, JSON.stringify(p.bandwidth));
  assert.ok(took < 5000, `the probe took ${took} ms`);
  await r.seen(1);
  assert.equal(r.rejected.length, 0, JSON.stringify(r.rejected));
  assert.match(r.probes[0] ?? "", /^check probe for guest \(emu\): 8 echoes, 8\.0 MiB in \d+ ms, \d+ ms$/);
  // A second probe, then the real migration: probes neither count as one nor hold the port.
  await probeReceiver(r.address, KEY, { path: join(dir, "guest.cfg"), text: configText() }, { sinkBytes: 1024, echoes: 1 });
  await r.seen(2);
  await migrationArrives(r);
});

test("probe: a qemu config names the installed QEMU (qemu-system-x86_64 --version) or says why not; a config the receiver cannot parse is a fact", async () => {
  const r = await receiver();
  const q = await probeReceiver(r.address, KEY, { path: join(dir, "q.cfg"), text: configText("qemu") }, { sinkBytes: 1024, echoes: 1 });
  assert.ok(q.facts.engine);
  if ("descriptor" in q.facts.engine) assert.match(q.facts.engine.descriptor, /^qemu \d+\.\d+\.\d+ pc$/);
  else assert.match(q.facts.engine.why, /qemu-system-x86_64/);
  assert.ok(q.facts.shm && "freeBytes" in q.facts.shm);
  const bad = await probeReceiver(r.address, KEY, { path: join(dir, "bad.cfg"), text: 'name = "guest"\nmemory = lots\n' }, { sinkBytes: 1024, echoes: 1 });
  assert.equal(bad.facts.config.ok, false);
  assert.match(bad.facts.config.ok ? "" : bad.facts.config.error, /bad\.cfg:2: memory: /);
  assert.deepEqual(bad.facts.files, []);
  await r.seen(2);
  assert.equal(r.rejected.length, 0);
  await migrationArrives(r);
});

test("probe: another key is an authentication failure; a closed port is refused", async () => {
  const r = await receiver();
  await assert.rejects(probeReceiver(r.address, randomBytes(32), { path: "/x.cfg", text: configText() }), (e: unknown) => e instanceof ChannelError && e.code === "AUTH");
  await r.seen(1);
  assert.equal(r.rejected[0]?.code, "AUTH");
  await migrationArrives(r);
  // The listener closed once the migration was accepted: nothing listens there now.
  await assert.rejects(probeReceiver(r.address, KEY, { path: "/x.cfg", text: configText() }), (e: unknown) => e instanceof ChannelError && e.code === "REFUSED");
});

test("probe: a receiver without probes (an older colo) refuses it as a bad stream", async () => {
  const r = await receiver({ probe: false });
  await assert.rejects(probeReceiver(r.address, KEY, { path: "/x.cfg", text: configText() }), (e: unknown) => e instanceof ProbeError && /not a colo stream/.test(e.message));
  await r.seen(1);
  assert.equal(r.rejected[0]?.code, "BAD_MAGIC");
  await migrationArrives(r);
});

interface BadProbe {
  name: string;
  /** What the probe sends after the handshake (a function: several steps). */
  send(s: TLSSocket): Promise<void>;
  code: string;
  reason: RegExp;
}

const REQUEST = JSON.stringify({ op: "check", version: 1, config: configText(), configPath: "/srv/guest.cfg" }) + "\n";

/** Reads lines until the `n`-th, then resolves with them. */
function lines(s: TLSSocket, n: number): Promise<string[]> {
  return new Promise((resolve) => {
    let text = "";
    const got = () => text.split("\n").slice(0, -1);
    s.on("data", (c: Buffer) => {
      text += c.toString();
      if (got().length >= n) resolve(got());
    });
    s.on("close", () => resolve(got()));
  });
}

const badProbes: BadProbe[] = [
  { name: "not JSON", send: async (s) => void s.write("{not json\n"), code: "PROBE", reason: /^probe: the probe request is not JSON/ },
  { name: "another op", send: async (s) => void s.write('{"op":"status"}\n'), code: "PROBE", reason: /op is "status", expected "check"/ },
  { name: "another version", send: async (s) => void s.write('{"op":"check","version":9,"config":"x","configPath":"/x"}\n'), code: "PROBE", reason: /probe version 9, this host speaks 1/ },
  { name: "a request line over the limit", send: async (s) => void s.write("{" + "x".repeat(MAX_PROBE_REQUEST_BYTES + 10)), code: "TOO_LONG", reason: /a line longer than 163840 octets/ },
  { name: "silence after the first octet", send: async (s) => void s.write("{"), code: "TIMEOUT", reason: /no whole line within 400 ms \(1 octets read\)/ },
  { name: "cut inside the request", send: async (s) => void s.end('{"op":"ch'), code: "TRUNCATED", reason: /the connection ended inside a line/ },
  {
    name: "an unknown step",
    send: async (s) => {
      const answers = lines(s, 1);
      s.write(REQUEST);
      await answers;
      s.write('{"op":"format-disk"}\n');
    },
    code: "PROBE",
    reason: /unknown probe op "format-disk"/,
  },
  {
    name: "too many echoes",
    send: async (s) => {
      s.write(REQUEST);
      for (let i = 0; i < 70; i++) s.write(JSON.stringify({ op: "echo", seq: i }) + "\n");
    },
    code: "PROBE",
    reason: /more than 64 echoes/,
  },
  {
    name: "a sink beyond its bound",
    send: async (s) => void s.write(REQUEST + JSON.stringify({ op: "sink", maxBytes: 2 ** 30 }) + "\n"),
    code: "PROBE",
    reason: /sink: "maxBytes" must be 1\.\.33554432/,
  },
];

test("probe: a bad probe is dropped like a bad peer, told why, and the receiver waits on for its migration", async () => {
  const r = await receiver({ lineTimeoutMs: 400 });
  for (const [i, bad] of badProbes.entries()) {
    const s = await connectSecure(r.address, KEY, 2000);
    clients.add(s);
    s.on("error", () => undefined);
    const said = lines(s, 100);
    await bad.send(s);
    await r.seen(i + 1);
    const got = r.rejected[i];
    assert.equal(got?.code, bad.code, `${bad.name}: ${JSON.stringify(got)}`);
    assert.match(got?.reason ?? "", bad.reason, bad.name);
    const last = (await said).at(-1) ?? "";
    if (bad.code !== "TRUNCATED") assert.match(last, /^\{"ok":false,"error":"/, `${bad.name}: told ${last}`);
  }
  assert.equal(r.probes.length, 0);
  await migrationArrives(r);
});

test("probe: a sink the primary does not fill ends after SINK_MAX_MS with what came", async () => {
  const r = await receiver();
  const s = await connectSecure(r.address, KEY, 2000);
  clients.add(s);
  s.on("error", () => undefined);
  const answers = lines(s, 2);
  s.write(REQUEST + JSON.stringify({ op: "sink", maxBytes: 2 ** 20 }) + "\n");
  s.write(Buffer.alloc(1000));
  const t0 = monotonicMs();
  const [, sink] = await answers;
  const waited = monotonicMs() - t0;
  const v = JSON.parse(sink ?? "{}") as { sink?: { bytes: number; ms: number } };
  assert.equal(v.sink?.bytes, 1000);
  assert.ok(waited >= SINK_MAX_MS - 100 && waited < SINK_MAX_MS + 1500, `answered after ${waited} ms`);
  await r.seen(1);
  assert.match(r.probes[0] ?? "", /0 echoes, 0\.0 MiB/);
  await migrationArrives(r);
});

test("probe: with probes on, a connection that is not one is greeted as before (its first octet left for the stream reader)", async () => {
  const r = await receiver({ greetingTimeoutMs: 300 });
  const silent = await connectSecure(r.address, KEY, 2000);
  clients.add(silent);
  silent.on("error", () => undefined);
  await r.seen(1);
  assert.equal(r.rejected[0]?.code, "TIMEOUT");
  assert.match(r.rejected[0]?.reason ?? "", /^no VM_CONFIG within 300 ms of the handshake \(0 octets read\)$/);
  const junk = await connectSecure(r.address, KEY, 2000);
  clients.add(junk);
  junk.on("error", () => undefined);
  junk.write("XColoTsFm-not-a-stream");
  await r.seen(2);
  assert.equal(r.rejected[1]?.code, "BAD_MAGIC");
  // A real source whose first octet comes alone: the octet peeked at is read again by the stream reader.
  const sink = new MemorySink();
  const writer = new StreamWriter(sink, { machine: machineHeader("emu", 8 * 4096) });
  await writer.writeVmConfig({ path: join(dir, "guest.cfg"), text: configText() });
  await writer.flush();
  const bytes = sink.bytes();
  const s = await connectSecure(r.address, KEY, 2000);
  clients.add(s);
  s.on("error", () => undefined);
  s.write(bytes.subarray(0, 1));
  await new Promise((resolve) => setTimeout(resolve, 50));
  s.write(bytes.subarray(1));
  const inc = await r.incoming;
  assert.equal(inc.config.name, "guest");
  assert.equal(r.probes.length, 0);
  inc.socket.destroy();
});

test("probe: a link slower than the sink: the receiver answers at its time limit and the primary stops sending at once", async () => {
  const r = await receiver({ sinkMaxMs: 20 });
  const t0 = monotonicMs();
  const p = await probeReceiver(r.address, KEY, { path: join(dir, "guest.cfg"), text: configText() }, { echoes: 1 });
  const took = monotonicMs() - t0;
  assert.equal(p.bandwidth.timeLimited, true);
  assert.ok(p.bandwidth.bytes > 0 && p.bandwidth.bytes < 32 * 2 ** 20 && p.bandwidth.ms <= 20 + 50, JSON.stringify(p.bandwidth));
  // Well under the receiver's 1 s linger: the pouring ends with the answer (also when waiting for "drain" on a full link).
  assert.ok(took < 900, `the probe took ${took.toFixed(0)} ms`);
  await r.seen(1);
  await migrationArrives(r);
});
