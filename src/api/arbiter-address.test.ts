import assert from "node:assert/strict";
import { test } from "node:test";
import { ArbiterAddressError, formatArbiterAddress, parseArbiterAddress } from "./arbiter-address.js";

test("--arbiter: the built-in arbiter's HOST[:PORT] and etcd://HOST:PORT[,HOST:PORT...], in canonical form", () => {
  const cases: [string, string][] = [
    ["10.77.0.1", "10.77.0.1:8003"],
    ["10.77.0.1:9000", "10.77.0.1:9000"],
    ["[::1]:8003", "[::1]:8003"],
    ["etcd://10.79.0.1:2379", "etcd://10.79.0.1:2379"],
    ["etcd://10.79.0.1", "etcd://10.79.0.1:2379"],
    ["ETCD://a.example:1,b-2.example:65535,[fd00::3]:2379", "etcd://a.example:1,b-2.example:65535,[fd00::3]:2379"],
  ];
  for (const [text, canonical] of cases) {
    const a = parseArbiterAddress(text);
    assert.equal(formatArbiterAddress(a), canonical, text);
    assert.deepEqual(parseArbiterAddress(canonical), a, `${canonical} reads back as itself`);
  }
  assert.deepEqual(parseArbiterAddress("etcd://h1:1,h2:2"), {
    kind: "etcd",
    endpoints: [
      { host: "h1", port: 1 },
      { host: "h2", port: 2 },
    ],
  });
});

test("--arbiter: a bad value is one line naming the option, the value and what is wrong", () => {
  const bad: [string, RegExp][] = [
    ["etcd://", /no endpoint/],
    ["etcd://:2379", /etcd endpoint 1 \(":2379"\) has an empty host/],
    ["etcd://h1:2379,:2379", /etcd endpoint 2 \(":2379"\) has an empty host/],
    ["etcd://h:0", /bad port "0" \(expected 1\.\.65535\)/],
    ["etcd://h:65536", /bad port "65536"/],
    ["etcd://h:12x", /bad port "12x"/],
    ["etcd://h:", /bad port ""/],
    ["etcd://h:1,,h2:2", /etcd endpoint 2 is empty/],
    ["etcd://h:1,", /etcd endpoint 2 is empty/],
    ["etcd://h:1/v3", /no path, query, user or spaces/],
    ["etcd://user@h:1", /no path, query, user or spaces/],
    ["etcd://h:1?x=1", /no path, query, user or spaces/],
    ["etcd://h 1:2", /no path, query, user or spaces/],
    ["etcd://h_1:2", /bad host "h_1"/],
    ["etcd://-h:2", /bad host "-h"/],
    ["etcd://::1:2379", /is not HOST\[:PORT\]/],
    ["etcd://[]:2379", /has an empty host/],
    ["etcd://[zz]:2379", /bad host "zz"/],
    ["etcd://h:1,h:1", /etcd endpoint h:1 is listed twice/],
    [`etcd://${Array.from({ length: 17 }, (_, i) => `h${i}:1`).join(",")}`, /17 etcd endpoints: at most 16/],
    ["http://h:2379", /unknown scheme "http"/],
    ["a:b:c", /bad address "a:b:c": expected HOST\[:PORT\]/],
    ["h:0", /bad port in "h:0"/],
  ];
  for (const [text, why] of bad) {
    assert.throws(
      () => parseArbiterAddress(text),
      (err: unknown) => {
        assert.ok(err instanceof ArbiterAddressError, text);
        assert.ok(err.message.startsWith(`--arbiter ${JSON.stringify(text)}: `), err.message);
        assert.match(err.reason, why, text);
        assert.doesNotMatch(err.message, /\n/);
        return true;
      },
    );
  }
});
