/**
 * Which chunks a re-protection must copy, when the two images' activity
 * logs (activity-log.ts) prove it: the primary's own log and the entry the
 * secondary sent for its image (DISK_LOG). Pure. Anything it cannot prove
 * falls back to the hash compare, with the reason (docs/operations.md
 * "Re-protection").
 *
 * The proofs (same lineage: both logs name one session):
 * - this side a survivor of checkpoint C (bits: the SVM's overlay it
 *   committed + every later write), the other the session's primary whose
 *   bits are relative to checkpoint N <= C (every write since N's pause):
 *   both images held the same state at N (the survivor's base held the
 *   state at C, which is the state at N plus writes the primary's bits
 *   hold), so they differ at most in the union of the bits.
 * - this side the session's primary (bits relative to a checkpoint N the
 *   secondary had durably applied), the other its replica (the state at
 *   some checkpoint >= N, or part way into applying a later one): they
 *   differ at most in the primary's bits.
 * A survivor and a replica of one session are the same image (or a copy
 * of it, which may be older than the survivor's checkpoint): no proof.
 */
import type { LogContents, LogKind } from "./activity-log.js";
import type { LogRead } from "./image-log.js";

/** The secondary's word on its image (a DISK_LOG entry, decoded). */
export interface PeerLog {
  /** Flags bit 0: a log is present (the fields below are its). */
  readonly flags: number;
  readonly lineage: Uint8Array;
  readonly kind: LogKind | undefined;
  readonly seq: number;
  readonly chunkSize: number;
  readonly size: number;
  readonly chunks: readonly number[];
}

/** DISK_LOG flags this side knows. */
export const PEER_LOG_PRESENT = 1;
const KNOWN_PEER_FLAGS = PEER_LOG_PRESENT;

export type LogPlan = { kind: "plan"; chunks: number[]; why: string } | { kind: "hash"; why: string };

/** The union of two ascending chunk lists, ascending. */
export function unionChunks(a: readonly number[], b: readonly number[]): number[] {
  const out: number[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    const x = a[i];
    const y = b[j];
    if (y === undefined || (x !== undefined && x < y)) {
      out.push(x as number);
      i++;
    } else if (x === undefined || y < x) {
      out.push(y);
      j++;
    } else {
      out.push(x);
      i++;
      j++;
    }
  }
  return out;
}

function sameLineage(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** The plan for one disk of `size` octets in chunks of `chunkSize`: the chunks to copy, or why the images must be hashed. */
export function planFromLogs(mine: LogRead, peer: PeerLog | undefined, disk: { size: number; chunkSize: number }): LogPlan {
  const hash = (why: string): LogPlan => ({ kind: "hash", why });
  if (peer === undefined) return hash("the secondary sent no log entry for this disk");
  if ((peer.flags & ~KNOWN_PEER_FLAGS) !== 0) return hash(`the secondary's log entry has flags 0x${peer.flags.toString(16)} this side does not know`);
  if ((peer.flags & PEER_LOG_PRESENT) === 0 || peer.kind === undefined) return hash("the secondary's image has no activity log");
  if (mine.kind === "none") return hash("this image has no activity log");
  if (mine.kind === "bad") return hash(`this image's activity log is unreadable: ${mine.problem}`);
  const own: LogContents = mine.log;
  if (!sameLineage(own.header.lineage, peer.lineage)) return hash("the two logs name different sessions (lineage)");
  if (own.header.size !== disk.size || peer.size !== disk.size) return hash(`sizes differ: image ${disk.size}, this log ${own.header.size}, the secondary's ${peer.size} octets`);
  if (own.header.chunkSize !== disk.chunkSize || peer.chunkSize !== disk.chunkSize) return hash(`chunk sizes differ: ${disk.chunkSize} wanted, this log ${own.header.chunkSize}, the secondary's ${peer.chunkSize}`);
  const a = own.header.kind;
  const b = peer.kind;
  if (a === "survivor" && b === "primary") {
    if (peer.seq > own.header.seq) return hash(`the old primary's log is relative to checkpoint ${peer.seq}, after this survivor's ${own.header.seq}`);
    return { kind: "plan", chunks: unionChunks(own.chunks, peer.chunks), why: `survivor of checkpoint ${own.header.seq}, the old primary's log relative to checkpoint ${peer.seq}` };
  }
  if (a === "primary" && b === "replica") return { kind: "plan", chunks: [...own.chunks], why: `primary's log relative to checkpoint ${own.header.seq}, the secondary holds its replica` };
  return hash(`no proof for this side's ${a} log and the secondary's ${b} log`);
}
