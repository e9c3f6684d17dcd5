import { test } from "node:test";
import assert from "node:assert/strict";
import { announceFrames, gratuitousArp, rarpAnnounce } from "./announce.js";

const MAC = Uint8Array.of(0x00, 0x16, 0x3e, 0x4c, 0x00, 0x10);

test("RARP announce: broadcast from the guest MAC, ethertype 0x8035, op 3", () => {
  const f = rarpAnnounce(MAC);
  assert.equal(f.length, 60);
  assert.deepEqual(Array.from(f.subarray(0, 6)), [255, 255, 255, 255, 255, 255]);
  assert.deepEqual(f.subarray(6, 12), MAC);
  assert.equal((f[12] ?? 0) * 256 + (f[13] ?? 0), 0x8035);
  assert.equal((f[20] ?? 0) * 256 + (f[21] ?? 0), 3);
  assert.deepEqual(f.subarray(22, 28), MAC);
  assert.deepEqual(f.subarray(32, 38), MAC);
});

test("gratuitous ARP carries the guest IP as sender and target", () => {
  const f = gratuitousArp(MAC, "10.77.0.10/24");
  assert.equal((f[12] ?? 0) * 256 + (f[13] ?? 0), 0x0806);
  assert.equal((f[20] ?? 0) * 256 + (f[21] ?? 0), 1);
  assert.deepEqual(Array.from(f.subarray(28, 32)), [10, 77, 0, 10]);
  assert.deepEqual(Array.from(f.subarray(38, 42)), [10, 77, 0, 10]);
  assert.throws(() => gratuitousArp(MAC, "10.77.0.300"), /bad IPv4/);
  assert.equal(announceFrames(MAC).length, 1);
  assert.equal(announceFrames(MAC, "10.0.0.1").length, 2);
});
