import assert from "node:assert/strict";
import test from "node:test";
import { LatencySamples } from "./latency-samples.js";
import { ResponseTimer } from "./response-time.js";
import { tcpFrame, toGuest } from "./testing.js";

const request = (payload: string, sport = 41000) => tcpFrame(toGuest({ seq: 1, ack: 1, flags: "PA", payload, sport }));
const reply = (payload: string, dport = 41000) => tcpFrame({ seq: 1, ack: 1, flags: "PA", payload, dport });

test("response time: from the first unanswered request's data to the guest's next data on that connection", () => {
  const r = new ResponseTimer();
  r.input(request("GET a"), 100);
  r.input(request("GET b"), 101); // still unanswered: the first one's start stays
  r.output(tcpFrame({ seq: 1, ack: 9, flags: "A" }), 102); // a pure ACK answers nothing
  r.output(reply("$1"), 103.5);
  r.output(reply("more"), 104); // nothing pending: no sample
  assert.deepEqual(r.summary(), { samples: 1, p50: 3.5, p99: 3.5, max: 3.5 });
});

test("response time: connections apart; a reply on another connection answers nothing", () => {
  const r = new ResponseTimer();
  r.input(request("x", 1), 0);
  r.input(request("y", 2), 10);
  r.output(reply("Y", 2), 12);
  r.output(reply("?", 3), 13);
  r.output(reply("X", 1), 20);
  assert.deepEqual(r.summary(), { samples: 2, p50: 20, p99: 20, max: 20 });
});

test("response time: at most maxPending unanswered connections, the oldest dropped", () => {
  const r = new ResponseTimer(2);
  for (const port of [1, 2, 3]) r.input(request("q", port), port);
  r.output(reply("a", 1), 10); // dropped: no sample
  r.output(reply("a", 3), 10);
  assert.equal(r.summary().samples, 1);
});

test("latency samples: a ring of the last N, percentiles to the microsecond", () => {
  const s = new LatencySamples(4);
  assert.deepEqual(s.summary(), { samples: 0, p50: 0, p99: 0, max: 0 });
  for (const v of [100, 1, 2, 3, 4.00049]) s.record(v); // 100 is pushed out
  assert.deepEqual(s.summary(), { samples: 4, p50: 3, p99: 4, max: 4 });
});
