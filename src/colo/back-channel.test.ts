/**
 * The primary's back-channel reader: the SVM's frames and the secondary's
 * checkpoint requests go to their callbacks the moment they arrive, past
 * whatever control records wait for the checkpoint code.
 */
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { test } from "node:test";
import type { CheckpointRequest } from "../state/index.js";
import { emuMachine } from "../state/testing.js";
import { StreamWriter } from "../state/writer.js";
import { BackChannel } from "./back-channel.js";

const FRAME = Uint8Array.from({ length: 60 }, (_, i) => i);

test("back channel: frames and checkpoint requests at once, control records in order through next()", async () => {
  const bytes = new PassThrough();
  const frames: Uint8Array[] = [];
  const requests: CheckpointRequest[] = [];
  let heard: () => void = () => undefined;
  const back = new BackChannel(
    bytes,
    (f) => frames.push(f),
    (r) => {
      requests.push(r);
      heard();
    },
  );
  const w = new StreamWriter({ write: (c) => new Promise((r) => bytes.write(c, () => r())) }, { machine: emuMachine(4), channel: "back-channel" });
  await w.writeDiskWant({ disk: 0, chunks: [] });
  await w.writeNetFrame({ direction: "secondary-output", frame: FRAME });
  const requested = new Promise<void>((resolve) => (heard = resolve));
  await w.writeCheckpointRequest({ reason: "disk-backlog", disk: 2 });
  await requested; // heard while DISK_WANT still waits for a reader
  assert.deepEqual(requests, [{ reason: "disk-backlog", disk: 2 }]);
  assert.deepEqual(frames, [FRAME]);
  const want = await back.next();
  assert.equal(want.kind, "disk-want");
  await w.writeCheckpointState("SVM_READY");
  await back.expectState("SVM_READY");
  bytes.end();
  await assert.rejects(back.next(), /the stream ended before its END record/);
});
