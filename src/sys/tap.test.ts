import { test } from "node:test";
import assert from "node:assert/strict";
import { SysError } from "./errors.js";
import { interfaceExists, isLinkUp, setLinkDown, setLinkUp } from "./netif.js";
import { openTap, type TapDevice } from "./tap.js";
import { ip, linkInfo, makeNetns, rootSkipReason, runCommand } from "./test-support.js";
import { elapsedMs, monotonicMs } from "./clock.js";

const skip = rootSkipReason();
const TAP_MODULE = new URL("./tap.js", import.meta.url).href;

// The fake peer behind the TAP (it exists only in the test's namespace).
const HOST_IP = "10.199.0.1";
const PEER_IP = "10.199.0.2";
const PEER_MAC = Uint8Array.from([0x02, 0x00, 0x00, 0xc0, 0x10, 0x02]);
const ECHO_PORT = 7;

function ipv4(s: string): Uint8Array {
  return Uint8Array.from(s.split(".").map(Number));
}
function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
function be16(f: Uint8Array, off: number): number {
  return ((f[off] ?? 0) << 8) | (f[off + 1] ?? 0);
}

/** An ARP request (RFC 826) from the kernel for `targetIp`. */
function isArpRequestFor(f: Uint8Array, targetIp: string): boolean {
  return f.length >= 42 && be16(f, 12) === 0x0806 && be16(f, 20) === 1 && equalBytes(f.subarray(38, 42), ipv4(targetIp));
}

/** The ARP reply "targetIp is at PEER_MAC" to request `req`. */
function arpReply(req: Uint8Array): Uint8Array {
  const r = new Uint8Array(42);
  r.set(req.subarray(6, 12), 0); // to the asker
  r.set(PEER_MAC, 6);
  r.set([0x08, 0x06], 12);
  r.set(req.subarray(14, 20), 14); // htype, ptype, hlen, plen
  r.set([0, 2], 20); // reply
  r.set(PEER_MAC, 22);
  r.set(req.subarray(38, 42), 28); // sender IP = the address asked for
  r.set(req.subarray(22, 32), 32); // target = the asker's MAC and IP
  return r;
}

/** A UDP datagram (IPv4, no options) to PEER_IP:ECHO_PORT. */
function isEchoRequest(f: Uint8Array): boolean {
  return f.length >= 42 && be16(f, 12) === 0x0800 && f[14] === 0x45 && f[23] === 17 && equalBytes(f.subarray(30, 34), ipv4(PEER_IP)) && be16(f, 36) === ECHO_PORT;
}

/**
 * The echo of a UDP datagram: MACs, IPs and ports swapped. The IPv4 and UDP
 * checksums are sums over these fields, so swapping keeps them valid.
 */
function udpEcho(f: Uint8Array): Uint8Array {
  const r = f.slice();
  r.set(f.subarray(6, 12), 0);
  r.set(f.subarray(0, 6), 6);
  r.set(f.subarray(30, 34), 26);
  r.set(f.subarray(26, 30), 30);
  r.set(f.subarray(36, 38), 34);
  r.set(f.subarray(34, 36), 36);
  return r;
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))] ?? NaN;
}

/** Runs `node -e SCRIPT ARGS` inside `netns` (optionally under a wrapper like setpriv). */
function nodeIn(netns: string, script: string, args: string[] = [], wrapper: string[] = []) {
  return runCommand("ip", ["netns", "exec", netns, ...wrapper, process.execPath, "--input-type=module", "-e", script, ...args]);
}

/** Opens a TAP in a fresh namespace with HOST_IP on it and the link up. */
async function tapInNetns(t: { after: (fn: () => unknown) => void }, name: string): Promise<{ netns: string; tap: TapDevice }> {
  const ns = await makeNetns();
  t.after(ns.remove);
  const tap = openTap(name, { netns: ns.name });
  t.after(() => tap.close());
  await ip("-n", ns.name, "addr", "add", `${HOST_IP}/24`, "dev", name);
  setLinkUp(name, { netns: ns.name });
  return { netns: ns.name, tap };
}

test("invalid TAP names are rejected before any system call", () => {
  // A namespace that does not exist: had a system call been made, it would fail with ENOENT.
  const opts = { netns: "colosys-does-not-exist" };
  for (const name of ["x".repeat(16), "tap 0", "tap/0", "tap%d", "", "-t"]) {
    assert.throws(() => openTap(name, opts), (err: unknown) => {
      assert.ok(err instanceof RangeError, String(err));
      assert.ok(!(err instanceof SysError));
      assert.match(err.message, /^invalid TAP name /);
      return true;
    });
  }
  assert.throws(() => openTap("x".repeat(16)), /invalid TAP name "x{16}": longer than 15 bytes/);
});

test("openTap: a non-persistent TAP, IFF_TAP|IFF_NO_PI, in the namespace asked for, gone after close", { skip, timeout: 30_000 }, async (t) => {
  const ns = await makeNetns();
  t.after(ns.remove);
  const opts = { netns: ns.name };
  const tap = openTap("ctap0", opts);
  t.after(() => tap.close());
  assert.equal(tap.name, "ctap0");
  assert.equal(tap.netns, ns.name);
  assert.equal(tap.persistent, false);
  assert.ok(tap.fd >= 0);
  assert.equal(interfaceExists("ctap0", opts), true);
  assert.equal(interfaceExists("ctap0"), false, "not in the test process's own namespace");
  const info = await linkInfo(ns.name, "ctap0");
  assert.equal(info?.link_type, "ether");
  const detail = await ip("-n", ns.name, "-d", "link", "show", "ctap0");
  assert.match(detail, /tun type tap /);
  assert.doesNotMatch(detail, /vnet_hdr on|persist on|pi on/);

  // A second open of a TAP in use: EBUSY, naming the call and the device.
  assert.throws(() => openTap("ctap0", opts), (err: unknown) => {
    assert.ok(err instanceof SysError);
    assert.equal(err.code, "EBUSY");
    assert.equal(err.call, "ioctl(TUNSETIFF)");
    assert.match(err.message, /^ioctl\(TUNSETIFF\) for TAP ctap0 in netns colosys-\S+ failed: EBUSY \(Device or resource busy\)$/);
    return true;
  });

  tap.close();
  assert.equal(tap.closed, true);
  assert.equal(interfaceExists("ctap0", opts), false, "the TAP went away with its fd");
  tap.close(); // idempotent
  assert.throws(() => tap.write(new Uint8Array(60)), /after close/);
});

test("openTap on a name held by a non-TAP interface (a bridge): EINVAL from TUNSETIFF", { skip, timeout: 30_000 }, async (t) => {
  const ns = await makeNetns();
  t.after(ns.remove);
  await ip("-n", ns.name, "link", "add", "cbr0", "type", "bridge");
  assert.throws(() => openTap("cbr0", { netns: ns.name }), (err: unknown) => {
    assert.ok(err instanceof SysError);
    assert.equal(err.call, "ioctl(TUNSETIFF)");
    assert.equal(err.code, "EINVAL");
    assert.equal(err.errno, 22);
    assert.match(err.message, /TAP cbr0/);
    return true;
  });
  assert.equal((await linkInfo(ns.name, "cbr0"))?.link_type, "ether", "the bridge is untouched");
});

test("TUNSETIFF without CAP_NET_ADMIN: SysError EPERM naming TUNSETIFF", { skip, timeout: 30_000 }, async (t) => {
  const ns = await makeNetns();
  t.after(ns.remove);
  const script = `
    const { openTap } = await import(${JSON.stringify(TAP_MODULE)});
    try { openTap("ctapp"); console.log(JSON.stringify({ opened: true })); }
    catch (e) { console.log(JSON.stringify({ name: e.name, call: e.call, code: e.code, errno: e.errno, message: e.message })); }`;
  // Still uid 0 (so /dev/net/tun, mode 0600, opens), but without CAP_NET_ADMIN.
  const r = await nodeIn(ns.name, script, [], ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-net_admin"]);
  assert.equal(r.code, 0, r.stderr);
  const res = JSON.parse(r.stdout) as { name: string; call: string; code: string; errno: number; message: string };
  assert.equal(res.name, "SysError");
  assert.equal(res.call, "ioctl(TUNSETIFF)");
  assert.equal(res.code, "EPERM");
  assert.equal(res.errno, 1);
  assert.match(res.message, /TUNSETIFF/);
  assert.match(res.message, /EPERM/);
  assert.match(res.message, /ctapp/);
  assert.equal(interfaceExists("ctapp", { netns: ns.name }), false);
});

test("frames both ways: the kernel's ARP and UDP reach onFrame, our replies reach a socket", { skip, timeout: 60_000 }, async (t) => {
  const { netns, tap } = await tapInNetns(t, "ctap1");
  const oneWayUs: number[] = [];
  let arpRequests = 0;
  const scratch = new Uint8Array(2048);
  tap.onFrame((f) => {
    if (isArpRequestFor(f, PEER_IP)) {
      arpRequests++;
      assert.equal(tap.write(arpReply(f)), true);
    } else if (isEchoRequest(f)) {
      const sentNs = new DataView(f.buffer, f.byteOffset + 42, 8).getBigInt64(0, true);
      oneWayUs.push(Number(process.hrtime.bigint() - sentNs) / 1000);
      // Write from the middle of a larger buffer: the binding must honour byteOffset.
      const echo = udpEcho(f);
      scratch.set(echo, 3);
      assert.equal(tap.write(scratch.subarray(3, 3 + echo.length)), true);
    }
  });

  const N = 200;
  // In the namespace: send N datagrams one after the other, each stamped
  // with CLOCK_MONOTONIC (shared by all processes), wait for each echo.
  const client = `
    import dgram from "node:dgram";
    import { randomBytes } from "node:crypto";
    const [n, peer, port] = [Number(process.argv[1]), process.argv[2], Number(process.argv[3])];
    const s = dgram.createSocket("udp4");
    const rtt = [];
    let sent, t0, guard;
    const next = () => {
      if (rtt.length === n) { console.log(JSON.stringify({ rtt })); process.exit(0); }
      sent = Buffer.concat([Buffer.alloc(8), Buffer.from([rtt.length & 255]), randomBytes(23)]);
      t0 = process.hrtime.bigint();
      sent.writeBigInt64LE(t0, 0);
      clearTimeout(guard);
      guard = setTimeout(() => { console.error("no echo for datagram " + rtt.length); process.exit(2); }, 3000);
      s.send(sent, port, peer);
    };
    s.on("message", (m) => {
      const us = Number(process.hrtime.bigint() - t0) / 1000;
      if (!m.equals(sent)) { console.error("echo differs"); process.exit(3); }
      rtt.push(us);
      next();
    });
    s.bind(0, next);`;
  const r = await nodeIn(netns, client, [String(N), PEER_IP, String(ECHO_PORT)]);
  assert.equal(r.code, 0, `client: ${r.stderr}`);
  const rtt = (JSON.parse(r.stdout) as { rtt: number[] }).rtt.sort((a, b) => a - b);
  assert.equal(rtt.length, N);
  assert.equal(oneWayUs.length, N);
  assert.ok(arpRequests >= 1);
  const st = tap.stats();
  assert.ok(st.rxFrames >= N + arpRequests, `rxFrames ${st.rxFrames}`);
  assert.ok(st.txFrames >= N + arpRequests, `txFrames ${st.txFrames}`);
  assert.equal(st.txDropped, 0);
  assert.equal(tap.droppedWrites, 0);
  oneWayUs.sort((a, b) => a - b);
  const fmt = (a: number[]): string => `p50 ${quantile(a, 0.5).toFixed(0)} us, p90 ${quantile(a, 0.9).toFixed(0)} us, p99 ${quantile(a, 0.99).toFixed(0)} us, max ${quantile(a, 1).toFixed(0)} us`;
  t.diagnostic(`kernel -> onFrame (one way, sendto to callback): ${fmt(oneWayUs)}`);
  t.diagnostic(`round trip through the TAP and back (UDP echo): ${fmt(rtt)}`);
  assert.ok(quantile(oneWayUs, 0.5) < 20_000, "median one-way latency under 20 ms");
});

test("write drops and counts what the kernel refuses: link down (EIO), shorter than an Ethernet header (EINVAL)", { skip, timeout: 30_000 }, async (t) => {
  const { netns, tap } = await tapInNetns(t, "ctap2");
  const frame = new Uint8Array(60).fill(0xff, 0, 6); // broadcast, zero payload
  assert.equal(tap.write(frame), true);
  setLinkDown("ctap2", { netns });
  assert.equal(isLinkUp("ctap2", { netns }), false);
  assert.equal(tap.write(frame), false);
  assert.equal(tap.write(frame), false);
  setLinkUp("ctap2", { netns });
  assert.equal(tap.write(new Uint8Array(10)), false);
  assert.equal(tap.write(frame), true);
  const st = tap.stats();
  assert.equal(st.txFrames, 2);
  assert.equal(st.txBytes, 120);
  assert.equal(st.txDropped, 3);
  assert.deepEqual(st.txDropsByCode, { EIO: 2, EINVAL: 1 });
  assert.equal(tap.droppedWrites, 3);
});

test("pause() leaves frames in the kernel's queue; resume() delivers them", { skip, timeout: 30_000 }, async (t) => {
  const { netns, tap } = await tapInNetns(t, "ctap3");
  const frames: Uint8Array[] = [];
  let arrived: (() => void) | undefined;
  tap.onFrame((f) => {
    frames.push(f);
    if (isArpRequestFor(f, PEER_IP)) arrived?.();
  });
  tap.pause();
  assert.equal(tap.paused, true);
  const before = frames.length;
  // One datagram: the kernel ARPs for the peer and queues the ARP request on
  // the TAP before sendto() returns, so it is waiting when the sender exits.
  const r = await nodeIn(netns, `
    import dgram from "node:dgram";
    const s = dgram.createSocket("udp4");
    s.send(Buffer.from("x"), 9, ${JSON.stringify(PEER_IP)}, (err) => process.exit(err ? 1 : 0));`);
  assert.equal(r.code, 0, r.stderr);
  for (let i = 0; i < 5; i++) await new Promise((res) => setImmediate(res)); // a few loop turns: nothing may arrive
  assert.equal(frames.length, before, "nothing delivered while paused");
  const got = new Promise<void>((res) => (arrived = res));
  tap.resume();
  assert.equal(tap.paused, false);
  await got;
  assert.ok(frames.some((f) => isArpRequestFor(f, PEER_IP)));
});

test("the reader reports the TAP's deletion as a SysError (read: EBADFD) and stops", { skip, timeout: 30_000 }, async (t) => {
  const { netns, tap } = await tapInNetns(t, "ctap4");
  tap.onFrame(() => undefined);
  const failed = new Promise<SysError>((res) => tap.onError(res));
  await ip("-n", netns, "link", "del", "ctap4");
  const err = await failed;
  assert.equal(err.call, "read");
  assert.equal(err.code, "EBADFD");
  assert.match(err.message, /^read for TAP ctap4 in netns \S+ failed: EBADFD/);
  assert.throws(() => tap.write(new Uint8Array(60)), (e: unknown) => e instanceof SysError && e.code === "EBADFD");
  tap.close();
});

test("after close() nothing of the TAP keeps the process alive", { skip, timeout: 30_000 }, async (t) => {
  const ns = await makeNetns();
  t.after(ns.remove);
  // With a reader running the process would stay up; after close() it must exit by itself.
  const script = `
    const { openTap } = await import(${JSON.stringify(TAP_MODULE)});
    const tap = openTap("ctap5");
    tap.onFrame(() => {});
    setImmediate(() => { tap.close(); console.log("closed " + tap.closed); });`;
  const started = monotonicMs();
  const r = await nodeIn(ns.name, script);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), "closed true");
  t.diagnostic(`child exited ${elapsedMs(started)} ms after spawn`);
});
