import { test } from "node:test";
import assert from "node:assert/strict";
import {
  IFNAMSIZ,
  IFREQ_SIZE,
  ifreqFlags,
  ifreqIndex,
  ifreqName,
  makeIfreq,
  setIfreqFlags,
  setIfreqIndex,
  validateInterfaceName,
} from "./ifreq.js";

test("interface names: 1..15 bytes of [A-Za-z0-9_.-]", () => {
  for (const ok of ["tap0", "a", "cv-guest", "x".repeat(15), "br_0.1"]) validateInterfaceName(ok);
  const bad: [string, RegExp][] = [
    ["", /empty/],
    ["x".repeat(16), /longer than 15 bytes/],
    ["tap 0", /allowed characters/],
    ["tap/0", /allowed characters/],
    ["tap:0", /allowed characters/],
    ["tap%d", /allowed characters/],
    ["täp", /allowed characters/],
    ["-tap", /must not start with '-'/],
    ["..", /reserved/],
  ];
  for (const [name, why] of bad) {
    assert.throws(() => validateInterfaceName(name, "TAP"), (err: unknown) => {
      assert.ok(err instanceof RangeError);
      assert.match(err.message, /^invalid TAP name /);
      assert.match(err.message, why);
      return true;
    });
  }
});

test("struct ifreq layout: name at 0 (NUL-terminated, IFNAMSIZ 16), union at 16, 40 bytes", () => {
  assert.equal(IFNAMSIZ, 16);
  const ifr = makeIfreq("x".repeat(15));
  assert.equal(ifr.byteLength, IFREQ_SIZE);
  assert.equal(IFREQ_SIZE, 40);
  assert.equal(ifr[14], 0x78);
  assert.equal(ifr[15], 0, "the 16th byte stays the NUL");
  assert.equal(ifreqName(ifr), "x".repeat(15));

  setIfreqFlags(ifr, 0x1002);
  assert.deepEqual([...ifr.subarray(16, 18)], [0x02, 0x10], "short ifr_flags, little-endian");
  assert.equal(ifreqFlags(ifr), 0x1002);
  setIfreqIndex(ifr, 0x01020304);
  assert.deepEqual([...ifr.subarray(16, 20)], [4, 3, 2, 1], "int ifr_ifindex, little-endian");
  assert.equal(ifreqIndex(ifr), 0x01020304);
  assert.ok(ifr.subarray(20).every((b) => b === 0));
});
