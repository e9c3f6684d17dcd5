/** planFromLogs: which pairs of logs prove a plan, and every reason to fall back to the hash compare (table-driven). */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { LogHeader, LogKind } from "./activity-log.js";
import type { LogRead } from "./image-log.js";
import { planFromLogs, unionChunks, type PeerLog } from "./log-plan.js";

const MiB = 2 ** 20;
const DISK = { size: 64 * MiB, chunkSize: MiB };
const L1 = new Uint8Array(16).fill(1);
const L2 = new Uint8Array(16).fill(2);

function mine(kind: LogKind, seq: number, chunks: number[], o: Partial<LogHeader> = {}): LogRead {
  return { kind: "ok", log: { header: { lineage: L1, kind, seq, size: DISK.size, chunkSize: MiB, ...o }, chunks } };
}

function peer(kind: LogKind | undefined, seq: number, chunks: number[], o: Partial<PeerLog> = {}): PeerLog {
  return { flags: 1, lineage: L1, kind, seq, chunkSize: MiB, size: DISK.size, chunks, ...o };
}

const CASES: { name: string; mine: LogRead; peer: PeerLog | undefined; plan?: number[]; why: RegExp }[] = [
  { name: "survivor at C, old primary at N < C: the union", mine: mine("survivor", 9, [1, 5]), peer: peer("primary", 7, [2, 5, 40]), plan: [1, 2, 5, 40], why: /survivor of checkpoint 9.*checkpoint 7/ },
  { name: "survivor at C, old primary at N = C: the union", mine: mine("survivor", 9, [3]), peer: peer("primary", 9, []), plan: [3], why: /survivor/ },
  { name: "primary, its replica: the primary's bits", mine: mine("primary", 4, [0, 63]), peer: peer("replica", 0, []), plan: [0, 63], why: /replica/ },
  { name: "nothing differs: an empty plan", mine: mine("primary", 4, []), peer: peer("replica", 0, []), plan: [], why: /replica/ },
  { name: "old primary's checkpoint after the survivor's", mine: mine("survivor", 5, [1]), peer: peer("primary", 6, [2]), why: /relative to checkpoint 6, after this survivor's 5/ },
  { name: "two primaries", mine: mine("primary", 3, [1]), peer: peer("primary", 3, [1]), why: /no proof for this side's primary log and the secondary's primary log/ },
  { name: "a survivor and a replica (the same image, or a copy)", mine: mine("survivor", 3, [1]), peer: peer("replica", 0, []), why: /no proof for this side's survivor log and the secondary's replica log/ },
  { name: "a replica as the primary", mine: mine("replica", 0, []), peer: peer("primary", 0, [1]), why: /no proof for this side's replica/ },
  { name: "two survivors", mine: mine("survivor", 3, []), peer: peer("survivor", 3, []), why: /no proof/ },
  { name: "another lineage", mine: mine("survivor", 9, [1]), peer: peer("primary", 7, [2], { lineage: L2 }), why: /different sessions \(lineage\)/ },
  { name: "no log here", mine: { kind: "none" }, peer: peer("replica", 0, []), why: /this image has no activity log/ },
  { name: "an unreadable log here", mine: { kind: "bad", problem: "checksum mismatch" }, peer: peer("replica", 0, []), why: /unreadable: checksum mismatch/ },
  { name: "no log there", mine: mine("primary", 1, []), peer: peer(undefined, 0, [], { flags: 0 }), why: /secondary's image has no activity log/ },
  { name: "no entry for the disk", mine: mine("primary", 1, []), peer: undefined, why: /no log entry for this disk/ },
  { name: "a flag this side does not know", mine: mine("primary", 1, []), peer: peer("replica", 0, [], { flags: 3 }), why: /flags 0x3 this side does not know/ },
  { name: "the image's size differs from this log's", mine: mine("primary", 1, [], { size: 32 * MiB }), peer: peer("replica", 0, []), why: /sizes differ/ },
  { name: "the image's size differs from the secondary's log", mine: mine("primary", 1, []), peer: peer("replica", 0, [], { size: 32 * MiB }), why: /sizes differ/ },
  { name: "chunk size here", mine: mine("primary", 1, [], { chunkSize: 4096 }), peer: peer("replica", 0, []), why: /chunk sizes differ/ },
  { name: "chunk size there", mine: mine("primary", 1, []), peer: peer("replica", 0, [], { chunkSize: 4096 }), why: /chunk sizes differ/ },
];

for (const c of CASES) {
  test(`log plan: ${c.name}`, () => {
    const p = planFromLogs(c.mine, c.peer, DISK);
    assert.match(p.why, c.why);
    if (c.plan === undefined) assert.equal(p.kind, "hash", p.why);
    else {
      assert.equal(p.kind, "plan", p.why);
      assert.deepEqual(p.kind === "plan" ? p.chunks : undefined, c.plan);
    }
  });
}

test("log plan: unionChunks merges ascending lists without repeats", () => {
  assert.deepEqual(unionChunks([], []), []);
  assert.deepEqual(unionChunks([0, 2, 4], [1, 2, 9]), [0, 1, 2, 4, 9]);
  assert.deepEqual(unionChunks([5], []), [5]);
});
