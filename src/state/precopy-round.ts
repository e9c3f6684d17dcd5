/**
 * PRECOPY_ROUND (docs/specs/stream.md §4.8, optional): announces a round of
 * a live migration so the receiver can show progress.
 */
import { StreamError, type StreamLocation } from "./errors.js";
import { defineLayout } from "./layout.js";
import { PRECOPY_ROUND_BODY } from "./record-types.js";

/** flags bit 0: the guest is paused; this is the stop-and-copy round. */
const FLAG_FINAL = 0x1;

export const precopyRoundLayout = defineLayout("PRECOPY_ROUND body", PRECOPY_ROUND_BODY, {
  round: { offset: 0, type: "u32", meaning: "0 for the first round (all pages), then 1, 2, ..." },
  flags: { offset: 4, type: "u32", meaning: "bit 0 FINAL; bits 1-31 reserved" },
  pageCount: { offset: 8, type: "u64", meaning: "pages this round will send" },
});

export interface PrecopyRound {
  readonly round: number;
  /** The guest is paused: stop-and-copy. */
  readonly final: boolean;
  /** Pages this round will send. */
  readonly pageCount: number;
}

export function precopyRoundProblem(round: PrecopyRound, machinePages: number): string | undefined {
  if (!Number.isInteger(round.round) || round.round < 0 || round.round > 0xffff_ffff) return `round ${round.round} is not a u32`;
  if (!Number.isInteger(round.pageCount) || round.pageCount < 0 || round.pageCount > machinePages) {
    return `page_count ${round.pageCount} is not in 0..${machinePages}`;
  }
  return undefined;
}

export function encodePrecopyRound(round: PrecopyRound): Uint8Array {
  return precopyRoundLayout.encode({ round: round.round, flags: round.final ? FLAG_FINAL : 0, pageCount: BigInt(round.pageCount) });
}

export function decodePrecopyRound(body: Uint8Array, where: StreamLocation, machinePages: number): PrecopyRound {
  const r = precopyRoundLayout.decode(body);
  if ((r.flags & ~FLAG_FINAL) !== 0) throw new StreamError("BAD_RESERVED", where, `reserved flag bits set: 0x${r.flags.toString(16)}`);
  if (r.pageCount > BigInt(machinePages)) {
    throw new StreamError("BAD_FIELD", where, `page_count ${r.pageCount} exceeds the machine's ${machinePages} pages`);
  }
  return { round: r.round, final: (r.flags & FLAG_FINAL) !== 0, pageCount: Number(r.pageCount) };
}
