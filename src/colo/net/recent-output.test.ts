import assert from "node:assert/strict";
import test from "node:test";
import { RecentTcpOutput } from "./recent-output.js";
import { arpFrame, tcpFrame, toGuest, udpFrame } from "./testing.js";

const seg = (seq: number, payload: string, dport = 41000, flags = "PA") => tcpFrame({ seq, ack: 1, flags, payload, dport });

test("recent output: keeps data and FIN segments of TCP, not pure ACKs, SYN, UDP or ARP", () => {
  const r = new RecentTcpOutput();
  r.record(seg(1, "+OK\r\n"));
  r.record(tcpFrame({ seq: 6, ack: 1, flags: "A" }));
  r.record(tcpFrame({ seq: 6, ack: 1, flags: "FA" }));
  r.record(tcpFrame({ seq: 0, ack: 1, flags: "SA" }));
  r.record(udpFrame({ payload: "dns" }));
  r.record(arpFrame());
  assert.deepEqual(r.stats(), { flows: 1, frames: 2, bytes: seg(1, "+OK\r\n").length + tcpFrame({ seq: 6, ack: 1, flags: "FA" }).length });
  const out = r.take();
  assert.deepEqual(out, [seg(1, "+OK\r\n"), tcpFrame({ seq: 6, ack: 1, flags: "FA" })]);
  assert.equal(r.stats().frames, 0, "take() empties the store");
});

test("recent output: a copy of each frame (the caller's buffer may be reused)", () => {
  const r = new RecentTcpOutput();
  const f = seg(1, "abc");
  r.record(f);
  f.fill(0);
  assert.deepEqual(r.take(), [seg(1, "abc")]);
});

test("recent output: the last perFlow segments per connection, the least recent connection first", () => {
  const r = new RecentTcpOutput({ perFlow: 2, maxFlows: 10, maxBytes: 1 << 20 });
  r.record(seg(1, "a", 1));
  r.record(seg(1, "b", 2));
  r.record(seg(2, "c", 1));
  r.record(seg(3, "d", 1));
  assert.deepEqual(r.take(), [seg(1, "b", 2), seg(2, "c", 1), seg(3, "d", 1)]);
});

test("recent output: bounded in connections and bytes, the oldest connection dropped first", () => {
  const few = new RecentTcpOutput({ perFlow: 8, maxFlows: 2, maxBytes: 1 << 20 });
  for (const port of [1, 2, 3]) few.record(seg(1, "x", port));
  assert.deepEqual(few.take(), [seg(1, "x", 2), seg(1, "x", 3)]);
  const size = seg(1, "y".repeat(100), 1).length;
  const small = new RecentTcpOutput({ perFlow: 8, maxFlows: 100, maxBytes: 2 * size });
  for (const port of [1, 2, 3]) small.record(seg(1, "y".repeat(100), port));
  assert.deepEqual(small.stats(), { flows: 2, frames: 2, bytes: 2 * size });
});

test("recent output: clear() forgets everything (a checkpoint replaced the SVM's state)", () => {
  const r = new RecentTcpOutput();
  r.record(seg(1, "a"));
  r.clear();
  assert.deepEqual(r.take(), []);
  assert.deepEqual(r.stats(), { flows: 0, frames: 0, bytes: 0 });
});

test("recent output: a connection reset either way, or closed both ways, is forgotten (its rewriting is gone too)", () => {
  const r = new RecentTcpOutput();
  const fromPeer = (flags: string, sport = 41000) => tcpFrame(toGuest({ seq: 9, ack: 1, flags, sport, dport: 6379 }));
  r.record(seg(1, "a", 41000));
  r.record(seg(1, "b", 41001));
  r.record(seg(1, "c", 41002));
  r.record(seg(1, "d", 41003));
  r.input(fromPeer("RA", 41000)); // the client's reset
  r.record(tcpFrame({ seq: 2, ack: 1, flags: "RA", dport: 41001 })); // the guest's reset
  r.record(tcpFrame({ seq: 2, ack: 1, flags: "FA", dport: 41002 })); // the guest's FIN, then the peer's: closed
  r.input(fromPeer("FA", 41002));
  r.input(fromPeer("FA", 41003)); // the peer's FIN only: half closed, kept
  assert.deepEqual(r.take(), [seg(1, "d", 41003)]);
  // The peer's FIN first, then the guest's: closed too, the guest's FIN not kept.
  r.record(seg(1, "e", 41004));
  r.input(fromPeer("FA", 41004));
  r.record(tcpFrame({ seq: 2, ack: 10, flags: "FA", dport: 41004 }));
  assert.deepEqual(r.take(), []);
});
