import { test } from "node:test";
import assert from "node:assert/strict";
import { formatMac, generatedMac, parseVifSpec } from "./vif.js";
import { ConfigError, type ConfigErrorCode } from "./errors.js";
import type { SpecContext } from "./spec.js";

const ctx: SpecContext = { file: "g.cfg", line: 9, key: "vif[0]", baseDir: "/vm" };

function fails(spec: string, code: ConfigErrorCode, fragment: string): void {
  assert.throws(
    () => parseVifSpec(spec, ctx, "guest", 0),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.equal(e.code, code, e.message);
      assert.equal(e.line, 9);
      assert.ok(e.message.startsWith("g.cfg:9: vif[0]: "), e.message);
      assert.ok(e.message.includes(fragment), `"${e.message}" lacks "${fragment}"`);
      return true;
    },
  );
}

test("every key", () => {
  const vif = parseVifSpec(
    " mac=00:16:3E:4c:00:10 , bridge=colobr, ip=10.77.0.10, gatewayip=10.77.0.1, forwarddev=eth1, model=ne2k,",
    ctx,
    "guest",
    0,
  );
  assert.equal(formatMac(vif.mac), "00:16:3e:4c:00:10");
  assert.deepEqual(
    [vif.bridge, vif.ip, vif.gateway, vif.forwarddev, vif.model, vif.at],
    ["colobr", "10.77.0.10/24", "10.77.0.1", "eth1", "ne2k", { file: "g.cfg", line: 9 }],
  );
});

test("an empty spec is a vif with defaults and a generated MAC", () => {
  const vif = parseVifSpec("", ctx, "guest", 0);
  assert.equal(vif.model, "virtio");
  assert.deepEqual([vif.bridge, vif.ip, vif.gateway, vif.forwarddev], [undefined, undefined, undefined, undefined]);
  assert.deepEqual(vif.mac, generatedMac("guest", 0));
});

test("generated MACs: Xen OUI, unicast, deterministic, distinct per name and index", () => {
  const a = generatedMac("guest", 0);
  assert.equal(a.length, 6);
  assert.deepEqual(Array.from(a.subarray(0, 3)), [0x00, 0x16, 0x3e]);
  assert.equal((a[3] ?? 0) & 0x80, 0);
  assert.deepEqual(generatedMac("guest", 0), a);
  assert.notDeepEqual(generatedMac("guest2", 0), a);
  assert.notDeepEqual(generatedMac("guest", 1), a);
});

test("ip keeps an explicit prefix", () => {
  assert.equal(parseVifSpec("ip=192.168.1.5/16", ctx, "g", 0).ip, "192.168.1.5/16");
});

const errors: [string, string, ConfigErrorCode, string][] = [
  ["multicast MAC", "mac=01:16:3e:00:00:01", "bad-value", "mac: 01:16:3e:00:00:01 is a multicast address"],
  ["short MAC", "mac=00:16:3e:00:01", "bad-value", `mac: expected six hex octets like 00:16:3e:4c:00:10, got "00:16:3e:00:01"`],
  ["zero MAC", "mac=00:00:00:00:00:00", "bad-value", "mac: 00:00:00:00:00:00 is not a valid NIC address"],
  ["bad ip", "ip=10.77.0.300/24", "bad-value", `ip: expected an IPv4 address`],
  ["prefix 33", "ip=10.77.0.1/33", "bad-value", `got "10.77.0.1/33"`],
  ["two ips", "ip=10.0.0.1 10.0.0.2", "unsupported-value", "ip: only one address is supported"],
  ["bad gateway", "gatewayip=10.77.0", "bad-value", `gatewayip: expected an IPv4 address like 10.77.0.1, got "10.77.0"`],
  ["long bridge name", "bridge=a-very-long-bridge0", "bad-value", "bridge: expected a network interface name (1..15 characters"],
  ["forwarddev with a slash", "forwarddev=eth/1", "bad-value", "forwarddev: expected a network interface name"],
  ["forwarddev of 16 characters", "forwarddev=abcdefghijklmnop", "bad-value", "forwarddev: expected a network interface name"],
  ["model e1000", "model=e1000", "unsupported-value", `model: expected virtio or ne2k, got "e1000"`],
  ["script", "script=vif-bridge", "unsupported-key", "script: vif scripts are not supported"],
  ["unknown key", "brige=colobr", "unknown-key", `unknown vif key "brige" (did you mean "bridge"?)`],
  ["COLO proxy key of QEMU-based Xen COLO", "colo_sock_mirror_port=9001", "unsupported-key", "ride the replication connection"],
  ["item without =", "mac", "syntax", `expected key=value, got "mac"`],
  ["key twice", "bridge=a, bridge=b", "bad-value", "bridge: given twice"],
];

for (const [title, spec, code, fragment] of errors) {
  test(`vif error: ${title}`, () => fails(spec, code, fragment));
}
