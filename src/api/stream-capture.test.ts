/**
 * COLO_CAPTURE_DIR: the plaintext copy of an outgoing stream, teed beside
 * the connection's sink as the primary and the migration source do it, is
 * octet for octet what the peer gets, verifies with `colo stream verify`'s
 * verifier, and is private (600 in a 700 folder). No VM, no socket.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { PAGE_SIZE } from "../engine/engine.js";
import { allPfns, machineHeader, MemorySink, StreamWriter, teeSink, verifyStream, writePages } from "../state/index.js";
import { emuState, SAMPLE_VM_CONFIG, sampleRam, seededRandom } from "../state/testing.js";
import { CAPTURE_DIR_ENV, captureFileName, openStreamCapture, type CaptureLog } from "./stream-capture.js";

const root = mkdtempSync(join(tmpdir(), "colo-capture-"));
after(() => rmSync(root, { recursive: true, force: true }));

function logger(): { log: CaptureLog; lines: string[] } {
  const lines: string[] = [];
  const line = (level: string) => (fields: object, msg: string) => void lines.push(`${level} ${msg} ${JSON.stringify(fields)}`);
  return { log: { info: line("info"), warn: line("warn") }, lines };
}

test("without COLO_CAPTURE_DIR nothing is captured", () => {
  const { log } = logger();
  assert.equal(openStreamCapture("vm", "replication", log, {}), undefined);
  assert.equal(openStreamCapture("vm", "replication", log, { [CAPTURE_DIR_ENV]: "" }), undefined);
});

test("the capture is the stream as sent, verifies, and is private", async () => {
  const dir = join(root, "captures");
  const { log, lines } = logger();
  const capture = openStreamCapture("guest", "migration", log, { [CAPTURE_DIR_ENV]: dir });
  assert.ok(capture);
  const wire = new MemorySink();
  const machine = machineHeader("emu", 64 * PAGE_SIZE);
  const writer = new StreamWriter(teeSink(wire, capture.sink), { machine });
  await writer.writeVmConfig(SAMPLE_VM_CONFIG);
  await writer.writeMemoryStream();
  await writePages(writer, sampleRam(seededRandom(5), 64), allPfns(64));
  await writer.writeEngineState(emuState(new Uint8Array([1, 2, 3])));
  await writer.writeMemoryEnd();
  await writer.writeEnd();
  await capture.close();
  await capture.sink.write(new Uint8Array(8)); // after close: dropped, never an error

  const copy = new Uint8Array(readFileSync(capture.path));
  assert.deepEqual(copy, wire.bytes());
  const result = await verifyStream(copy);
  assert.ok(result.ok && result.summary.kind === "save");
  assert.equal(statSync(capture.path).mode & 0o777, 0o600);
  assert.equal(statSync(dir).mode & 0o777, 0o700);
  assert.match(readdirSync(dir)[0] ?? "", /^guest-migration-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z-\d+\.colo$/);
  assert.ok(lines.some((l) => l.includes(capture.path) && l.includes("capturing")), lines.join("\n"));
});

test("a capture folder that cannot be made: logged, the stream goes uncaptured", () => {
  const notADir = join(root, "file");
  writeFileSync(notADir, "x");
  const { log, lines } = logger();
  assert.equal(openStreamCapture("vm", "replication", log, { [CAPTURE_DIR_ENV]: join(notADir, "sub") }), undefined);
  assert.ok(lines.some((l) => l.includes("cannot make the capture folder")), lines.join("\n"));
});

test("a capture file that fails never fails the stream", async () => {
  const dir = join(root, "busy");
  const { log, lines } = logger();
  const capture = openStreamCapture("vm", "replication", log, { [CAPTURE_DIR_ENV]: dir });
  assert.ok(capture);
  // Another file already at the name (flag wx): the open fails, the copy stops, the sink still resolves.
  writeFileSync(capture.path, "taken");
  await new Promise((r) => setTimeout(r, 50));
  const wire = new MemorySink();
  const tee = teeSink(wire, capture.sink);
  await tee.write(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
  await capture.close();
  assert.equal(wire.length, 8);
  assert.ok(lines.some((l) => l.includes("stream capture failed")), lines.join("\n"));
});

test("capture file names: vm, kind, UTC time, pid", () => {
  assert.equal(captureFileName("guest", "replication", new Date(Date.UTC(2025, 0, 2, 3, 4, 5, 6))), `guest-replication-2025-01-02T03-04-05-006Z-${process.pid}.colo`);
});
