import { test } from "node:test";
import assert from "node:assert/strict";
import { parseCounters, wireDelta, wireSender } from "./wire-watch.js";

// What nftables 1.0.6 prints for `nft -j list counters table bridge colo_wire` (taken from a run in a namespace).
const LISTED =
  '{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, ' +
  '{"counter": {"family": "bridge", "name": "h1", "table": "colo_wire", "handle": 2, "packets": 8, "bytes": 352}}, ' +
  '{"counter": {"family": "bridge", "name": "h2", "table": "colo_wire", "handle": 3, "packets": 0, "bytes": 0}}]}';

test("wire watch: nft's JSON counters are read by name; a missing counter is an error, not a zero", () => {
  assert.deepEqual(parseCounters(LISTED), { h1: 8, h2: 0 });
  assert.throws(() => parseCounters('{"nftables": [{"counter": {"name": "h1", "packets": 3}}]}'), /counters h1 and h2 not in nft's answer/);
  assert.throws(() => parseCounters("not json"), SyntaxError);
});

test("wire watch: the sender of a window is exactly one host, both (split brain) or none", () => {
  const d = wireDelta({ h1: 100, h2: 0 }, { h1: 100, h2: 37 });
  assert.deepEqual(d, { h1: 0, h2: 37 });
  assert.equal(wireSender(d), "h2");
  assert.equal(wireSender({ h1: 5, h2: 0 }), "h1");
  assert.equal(wireSender({ h1: 1, h2: 1 }), "both");
  assert.equal(wireSender({ h1: 0, h2: 0 }), "none");
});
