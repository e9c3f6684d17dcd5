import { test } from "node:test";
import assert from "node:assert/strict";
import { parseRequest, parseResponse } from "./protocol.js";

test("protocol: valid requests parse to typed values", () => {
  assert.deepEqual(parseRequest('{"op":"status"}'), { op: "status" });
  assert.deepEqual(parseRequest('{"op":"metrics"}'), { op: "metrics" });
  assert.deepEqual(parseRequest('{"op":"console","replay":false}'), { op: "console", replay: false });
  assert.deepEqual(parseRequest('{"op":"console-tail","bytes":100}'), { op: "console-tail", bytes: 100 });
  assert.deepEqual(parseRequest('{"op":"destroy","extra":1}'), { op: "destroy" });
});

test("protocol: bad requests are refused with what is wrong", () => {
  const cases: [string, RegExp][] = [
    ["not json", /not JSON/],
    ["[1,2]", /JSON object/],
    ["null", /JSON object/],
    ['{"op":5}', /no "op" string/],
    ['{"op":"reboot"}', /unknown op "reboot"/],
    ['{"op":"console","replay":"yes"}', /replay.*boolean/],
    ['{"op":"console-tail","bytes":-1}', /bytes.*integer/],
    ['{"op":"console-tail","bytes":1e9}', /bytes.*integer/],
  ];
  for (const [line, re] of cases) assert.throws(() => parseRequest(line), re, line);
});

test("protocol: responses", () => {
  assert.deepEqual(parseResponse('{"ok":true,"result":{"a":1}}'), { ok: true, result: { a: 1 } });
  assert.deepEqual(parseResponse('{"ok":false,"error":"no"}'), { ok: false, error: "no" });
  assert.throws(() => parseResponse('{"ok":false}'), /neither/);
  assert.throws(() => parseResponse("garbage"), /not JSON/);
});

test("protocol: remus carries the arbiter as given: colo arbiter's host:port or an etcd:// list", () => {
  const base = { op: "remus", host: "10.77.1.2", port: 8002, keyFile: "/k", intervalMs: 100, timeoutMs: 1000, heartbeatMs: 200, leaseMs: 1000 };
  for (const arbiter of ["10.77.0.1:8003", "etcd://10.79.0.1:2379,10.79.0.2:2379,10.79.0.3:2379"]) {
    assert.deepEqual(parseRequest(JSON.stringify({ ...base, arbiter })), { ...base, arbiter });
  }
  assert.throws(() => parseRequest(JSON.stringify({ ...base, arbiter: `etcd://${"h".repeat(1020)}` })), /"arbiter" must be "host:port" or "etcd:\/\/host:port\[,host:port\.\.\.\]"/);
});

test("protocol: remus carries fullDiskSync (colo protect --full-disk-sync), a boolean", () => {
  const base = { op: "remus", host: "10.77.1.2", port: 8002, keyFile: "/k", intervalMs: 100, timeoutMs: 1000, heartbeatMs: 200 };
  assert.deepEqual(parseRequest(JSON.stringify({ ...base, fullDiskSync: true })), { ...base, fullDiskSync: true });
  assert.deepEqual(parseRequest(JSON.stringify({ ...base, fullDiskSync: false })), base);
  assert.throws(() => parseRequest(JSON.stringify({ ...base, fullDiskSync: "yes" })), /"fullDiskSync" must be a boolean/);
});

test("protocol: remus carries a reprotect target; a bad one is refused with the field", () => {
  const base = { op: "remus", host: "10.77.1.2", port: 8002, keyFile: "/k", intervalMs: 100, timeoutMs: 1000, heartbeatMs: 200 };
  const reprotect = { host: "10.77.1.1", port: 8002, configPath: "/etc/colo/guest.cfg" };
  assert.deepEqual(parseRequest(JSON.stringify({ ...base, reprotect })), { ...base, reprotect });
  assert.deepEqual(parseRequest(JSON.stringify({ ...base, reprotect: { host: "h1", port: 1 } })), { ...base, reprotect: { host: "h1", port: 1 } });
  const cases: [unknown, RegExp][] = [
    ["10.77.1.1", /"reprotect" must be an object/],
    [{ port: 8002 }, /"reprotect.host"/],
    [{ host: "h", port: 0 }, /"reprotect.port" must be 1..65535/],
    [{ host: "h", port: 8002, configPath: "guest.cfg" }, /"reprotect.configPath" must be an absolute path/],
  ];
  for (const [r, re] of cases) assert.throws(() => parseRequest(JSON.stringify({ ...base, reprotect: r })), re, JSON.stringify(r));
});
