/**
 * The comparator's byte-range bookkeeping in a TCP stream's sequence space:
 * stream units (octets, SYN, FIN), pieces of them at a position, a set of
 * covered intervals, and a store of pieces one side sent that the other has
 * not matched yet. Positions are plain numbers relative to a base sequence
 * number, so they grow past 2^32 without wrapping.
 */

/** Unit values: octets are 0..255; SYN and FIN are units of their own. */
const SYN_UNIT = 0x100;
const FIN_UNIT = 0x101;

/** A run of stream units: an optional SYN, octets, an optional FIN. */
export interface Units {
  syn: boolean;
  data: Uint8Array;
  fin: boolean;
}

export function unitCount(u: Units): number {
  return (u.syn ? 1 : 0) + u.data.length + (u.fin ? 1 : 0);
}

export function unitAt(u: Units, i: number): number {
  if (u.syn) {
    if (i === 0) return SYN_UNIT;
    i -= 1;
  }
  if (i < u.data.length) return u.data[i] ?? 0;
  return FIN_UNIT;
}

export function sliceUnits(u: Units, from: number, to: number): Units {
  const synShift = u.syn ? 1 : 0;
  const dataFrom = Math.min(Math.max(from - synShift, 0), u.data.length);
  const dataTo = Math.min(Math.max(to - synShift, 0), u.data.length);
  return {
    syn: u.syn && from === 0 && to > 0,
    data: u.data.subarray(dataFrom, dataTo),
    fin: u.fin && to === unitCount(u) && from < to,
  };
}

export function describeUnit(unit: number): string {
  if (unit === SYN_UNIT) return "SYN";
  if (unit === FIN_UNIT) return "FIN";
  return `0x${unit.toString(16).padStart(2, "0")}`;
}

export interface Piece {
  start: number;
  units: Units;
  /** When the piece arrived (SVM pieces: for "secondary-extra"). */
  at: number;
}

export function pieceEnd(p: Piece): number {
  return p.start + unitCount(p.units);
}

export type Interval = readonly [number, number];

/** Parts of [start, end) not covered by `covered` (sorted, disjoint). */
function gapsIn(covered: Iterable<Interval>, start: number, end: number): Interval[] {
  const gaps: Interval[] = [];
  let cursor = start;
  for (const [s, e] of covered) {
    if (e <= cursor) continue;
    if (s >= end) break;
    if (s > cursor) gaps.push([cursor, s]);
    cursor = Math.max(cursor, e);
    if (cursor >= end) break;
  }
  if (cursor < end) gaps.push([cursor, end]);
  return gaps;
}

/** Sorted, disjoint, merged intervals. */
export class IntervalSet {
  private items: Array<[number, number]> = [];

  add(start: number, end: number): void {
    if (end <= start) return;
    const out: Array<[number, number]> = [];
    let s = start;
    let e = end;
    let placed = false;
    for (const [a, b] of this.items) {
      if (b < s) out.push([a, b]);
      else if (a > e) {
        if (!placed) out.push([s, e]);
        placed = true;
        out.push([a, b]);
      } else {
        s = Math.min(s, a);
        e = Math.max(e, b);
      }
    }
    if (!placed) out.push([s, e]);
    this.items = out;
  }

  gaps(start: number, end: number): Interval[] {
    return gapsIn(this.items, start, end);
  }

  first(): Interval | undefined {
    return this.items[0];
  }

  dropBelow(position: number): void {
    this.items = this.items.filter(([, e]) => e > position).map(([s, e]) => [Math.max(s, position), e]);
  }
}

/** Stream units one side sent that the other has not matched yet: sorted, disjoint pieces. */
export class PieceStore {
  private pieces: Piece[] = [];
  units = 0;

  /** `reserve(n)` books n more units (false: no room), `reserve(-n)` frees them. */
  constructor(private readonly reserve: (delta: number) => boolean = () => true) {}

  private *intervals(): Iterable<Interval> {
    for (const p of this.pieces) yield [p.start, pieceEnd(p)];
  }

  gaps(start: number, end: number): Interval[] {
    return gapsIn(this.intervals(), start, end);
  }

  /** Pieces overlapping [start, end), clipped to it, in order. */
  overlapping(start: number, end: number): Piece[] {
    const out: Piece[] = [];
    for (const p of this.pieces) {
      const pe = pieceEnd(p);
      if (pe <= start) continue;
      if (p.start >= end) break;
      const s = Math.max(p.start, start);
      const e = Math.min(pe, end);
      out.push({ start: s, units: sliceUnits(p.units, s - p.start, e - p.start), at: p.at });
    }
    return out;
  }

  /** Adds a piece that overlaps nothing in the store; false when there is no room for it. */
  add(piece: Piece): boolean {
    const n = unitCount(piece.units);
    if (n === 0) return true;
    if (!this.reserve(n)) return false;
    let i = this.pieces.length;
    while (i > 0 && (this.pieces[i - 1]?.start ?? 0) > piece.start) i--;
    this.pieces.splice(i, 0, piece);
    this.units += n;
    return true;
  }

  /** Cuts [start, end) out of the store. */
  remove(start: number, end: number): void {
    const kept: Piece[] = [];
    let removed = 0;
    for (const p of this.pieces) {
      const pe = pieceEnd(p);
      if (pe <= start || p.start >= end) {
        kept.push(p);
        continue;
      }
      removed += Math.min(pe, end) - Math.max(p.start, start);
      if (p.start < start) kept.push({ start: p.start, units: sliceUnits(p.units, 0, start - p.start), at: p.at });
      if (pe > end) kept.push({ start: end, units: sliceUnits(p.units, end - p.start, pe - p.start), at: p.at });
    }
    this.pieces = kept;
    if (removed > 0) {
      this.units -= removed;
      this.reserve(-removed);
    }
  }

  dropBelow(position: number): void {
    const first = this.pieces[0];
    if (first && first.start < position) this.remove(first.start, position);
  }

  clear(): void {
    if (this.units > 0) this.reserve(-this.units);
    this.pieces = [];
    this.units = 0;
  }

  oldest(): Piece | undefined {
    let oldest: Piece | undefined;
    for (const p of this.pieces) if (!oldest || p.at < oldest.at) oldest = p;
    return oldest;
  }
}
