import { test } from "node:test";
import assert from "node:assert/strict";
import { QmpLineSplitter, parseQmpLine } from "./qmp-wire.js";

test("wire: the four message kinds parse into typed values", () => {
  assert.deepEqual(
    parseQmpLine('{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2"}, "capabilities": ["oob"]}}'),
    { kind: "greeting", greeting: { version: { major: 7, minor: 2, micro: 22, package: "Debian 1:7.2" }, capabilities: ["oob"] } },
  );
  assert.deepEqual(parseQmpLine('{"return": {"running": false}, "id": 3}'), { kind: "return", id: 3, value: { running: false } });
  assert.deepEqual(parseQmpLine('{"id": "x", "error": {"class": "GenericError", "desc": "no"}}'), {
    kind: "error",
    id: "x",
    class: "GenericError",
    desc: "no",
  });
  assert.deepEqual(parseQmpLine('{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}'), {
    kind: "event",
    event: { event: "STOP", data: {}, timestamp: { seconds: 1, microseconds: 2 } },
  });
  assert.deepEqual(parseQmpLine('{"return": {}}'), { kind: "return", id: undefined, value: {} });
});

test("wire: malformed lines are reported with why, never thrown", () => {
  const cases: [string, RegExp][] = [
    ["{not json", /not JSON/],
    ["[1, 2]", /not a JSON object/],
    ["42", /not a JSON object/],
    ["null", /not a JSON object/],
    ['{"QMP": {"version": {"qemu": {"major": 7, "minor": "2", "micro": 0}, "package": ""}, "capabilities": []}}', /major,minor,micro/],
    ['{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}}', /package/],
    ['{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""}, "capabilities": [1]}}', /capabilities/],
    ['{"QMP": 1}', /greeting is not an object/],
    ['{"event": 5, "timestamp": {"seconds": 1, "microseconds": 2}}', /event name/],
    ['{"event": "STOP"}', /event STOP: timestamp/],
    ['{"event": "STOP", "data": [], "timestamp": {"seconds": 1, "microseconds": 2}}', /event STOP: data/],
    ['{"return": {}, "id": {"a": 1}}', /id is neither/],
    ['{"error": "bad", "id": 1}', /error is not \{class, desc\}/],
    ['{"error": {"class": "X"}, "id": 1}', /error is not \{class, desc\}/],
    ['{"hello": 1}', /neither a greeting/],
  ];
  for (const [line, why] of cases) {
    const m = parseQmpLine(line);
    assert.equal(m.kind, "malformed", line);
    if (m.kind === "malformed") assert.match(m.why, why, line);
  }
});

test("wire: lines split across chunks, CRLF, empty lines and a UTF-8 character cut in two", () => {
  const s = new QmpLineSplitter();
  const text = Buffer.from('{"return": "é"}\r\n\r\n{"return": 2}\n{"ret', "utf8");
  const cut = text.indexOf(0xa9); // second byte of é
  assert.deepEqual(s.push(text.subarray(0, cut)), []);
  assert.deepEqual(s.push(text.subarray(cut)), ['{"return": "é"}', '{"return": 2}']);
  assert.deepEqual(s.push(Buffer.from('urn": 3}\r\n')), ['{"return": 3}']);
  assert.deepEqual(s.push(Buffer.from('{"partial"')), []);
  assert.equal(s.end(), '{"partial"');
});

test("wire: an over-long line is refused (complete or still open)", () => {
  const open = new QmpLineSplitter(16);
  const r1 = open.push(Buffer.from("x".repeat(20)));
  assert.ok(!Array.isArray(r1) && /longer than 16 characters/.test(r1.tooLong));
  const complete = new QmpLineSplitter(16);
  const r2 = complete.push(Buffer.from(`${"y".repeat(20)}\n{}\n`));
  assert.ok(!Array.isArray(r2) && /starts "yyyy/.test(r2.tooLong));
});
