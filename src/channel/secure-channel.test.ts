import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync, chmodSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ChannelError, connectSecure, listenSecure, parseEndpoint } from "./secure-channel.js";
import { generateKeyFile, loadKey, KeyError } from "./key.js";

test("secure channel: same key connects and carries bytes; another key is refused on both sides", async () => {
  const key = randomBytes(32);
  const rejected: ChannelError[] = [];
  const listener = await listenSecure(
    { host: "127.0.0.1", port: 0 },
    key,
    (s) => s.on("data", (d: Buffer) => s.write(Buffer.concat([Buffer.from("echo:"), d]))),
    (e) => rejected.push(e),
  );
  try {
    const c = await connectSecure(listener.address, key);
    const reply = await new Promise<string>((resolve) => {
      c.once("data", (d: Buffer) => resolve(d.toString()));
      c.write("hi");
    });
    c.destroy();
    assert.equal(reply, "echo:hi");

    await assert.rejects(connectSecure(listener.address, randomBytes(32)), (e: unknown) => e instanceof ChannelError && e.code === "AUTH");
    assert.equal(rejected.length, 1);
    assert.equal(rejected[0]?.code, "AUTH");
  } finally {
    await listener.close();
  }
  await assert.rejects(connectSecure(listener.address, key, 2000), (e: unknown) => e instanceof ChannelError && e.code === "REFUSED");
});

test("listener: a peer that is not TLS, or silent, is rejected naming it and what was wrong, and disconnected", { timeout: 10_000 }, async () => {
  const key = randomBytes(32);
  const rejected: ChannelError[] = [];
  const listener = await listenSecure({ host: "127.0.0.1", port: 0 }, key, (s) => s.destroy(), (e) => rejected.push(e), { handshakeTimeoutMs: 300 });
  try {
    /** A TCP peer sending `bytes` (and not closing): resolves with its port once the listener has closed the connection. */
    const peer = (bytes: Buffer | undefined) =>
      new Promise<number | undefined>((resolve, reject) => {
        const s = netConnect(listener.address.port, listener.address.host);
        let port: number | undefined;
        s.once("connect", () => {
          port = s.localPort;
          if (bytes) s.write(bytes);
        });
        s.on("error", reject);
        s.resume();
        s.on("close", () => resolve(port));
      });
    const http = await peer(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    const silent = await peer(undefined);
    assert.equal(rejected.length, 2);
    assert.equal(rejected[0]?.code, "IO");
    assert.equal(rejected[0]?.peer, `127.0.0.1:${http}`);
    assert.match(rejected[0]?.reason ?? "", /^TLS handshake failed: [a-z ]+ \(not a colo peer\?\)$/, "OpenSSL's reason, not its error queue");
    assert.equal(rejected[0]?.message, `connection from 127.0.0.1:${http} rejected: ${rejected[0]?.reason}`);
    assert.equal(rejected[1]?.code, "TIMEOUT");
    assert.equal(rejected[1]?.message, `connection from 127.0.0.1:${silent} rejected: no TLS handshake within 300 ms`);
  } finally {
    await listener.close();
  }
});

test("endpoints parse HOST[:PORT] and reject bad ports", () => {
  assert.deepEqual(parseEndpoint("10.77.1.2", 8002), { host: "10.77.1.2", port: 8002 });
  assert.deepEqual(parseEndpoint("10.77.1.2:9000", 8002), { host: "10.77.1.2", port: 9000 });
  assert.deepEqual(parseEndpoint("[::1]:9000", 8002), { host: "::1", port: 9000 });
  assert.throws(() => parseEndpoint("h:0", 1), /bad port/);
  assert.throws(() => parseEndpoint("h:70000", 1), /bad port/);
  assert.throws(() => parseEndpoint("", 1), /bad address/);
});

test("key files: generated 0600, loaded; bad files refused naming the file", () => {
  const dir = mkdtempSync(join(tmpdir(), "colo-key-"));
  try {
    const path = join(dir, "k");
    generateKeyFile(path);
    assert.equal(loadKey(path).length, 32);
    assert.throws(() => generateKeyFile(path), /exists/);
    chmodSync(path, 0o644);
    assert.throws(() => loadKey(path), (e: unknown) => e instanceof KeyError && /readable by others/.test(e.message));
    writeFileSync(join(dir, "short"), "abcd\n", { mode: 0o600 });
    assert.throws(() => loadKey(join(dir, "short")), /2 bytes, need at least 32/);
    writeFileSync(join(dir, "junk"), "not hex\n", { mode: 0o600 });
    assert.throws(() => loadKey(join(dir, "junk")), /hex/);
    assert.throws(() => loadKey(join(dir, "missing")), /cannot read key file .*missing.*ENOENT.*colo keygen/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
