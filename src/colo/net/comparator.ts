/**
 * The primary's output comparator (COLO-PROTOCOL.md §1, §4 step 1 and 6, §6).
 *
 * Every frame the primary VM (PVM) sends is held until the secondary VM (SVM)
 * has sent the same output; the SVM's frames are never released, only used
 * to match. A difference, or output one side does not produce in time, is a
 * divergence: the caller takes a checkpoint, after which `checkpointed()`
 * hands back every held frame (the SVM now holds the state that produced
 * them) and the comparison starts afresh.
 *
 * Pure logic: no sockets, no timers. Time comes in as `nowMs` (monotonic).
 *
 * What is compared, per flow (flows are independent; within a flow PVM
 * frames leave in the PVM's order):
 *
 * - TCP (flow = src ip:port > dst ip:port): the payload stream by byte ranges
 *   in sequence space, so PVM and SVM may segment it differently. SYN and FIN
 *   are one sequence unit each and must sit at the same position on both
 *   sides ("length" if not). SVM frames arrive already rewritten into the
 *   PVM's sequence space by the secondary's TcpRewriter, except the SVM's own
 *   SYN / SYN-ACK (the rewriter learns the offset only from the peer's next
 *   ACK): any SVM SYN of the connection is mapped onto the PVM's SYN.
 *   Besides its data, a PVM segment waits until the SVM has sent an ack number
 *   >= its own (acks are in the peer's sequence space, the same for both
 *   VMs): so the PVM never acknowledges input the SVM has not received.
 *   A PVM RST waits for an SVM RST on the flow.
 *   Not compared: window (differs with buffer timing, no semantic meaning),
 *   options (TCP timestamps come from a per-VM clock and are rewritten by the
 *   secondary; SACK blocks describe the peer's data, not the guest's state),
 *   PSH/URG/ECE/CWR (PSH follows segmentation; ECN marks follow the path),
 *   IP id, TTL, checksums (IP ids come from a per-VM counter; checksums follow
 *   from the rest).
 *   Retransmissions: PVM data entirely below the flow's watermark (everything
 *   below it was compared, or predates the flow state) leaves uncompared; SVM
 *   data below it is discarded. The watermark starts at the PVM's first
 *   segment on the flow: after a checkpoint both VMs hold the same TCP state,
 *   so data below the PVM's first segment was sent before the checkpoint.
 * - UDP (same flow key): datagrams matched in order by payload.
 * - ICMP (flow = src, dst, type, code, and identifier for echo): messages in
 *   order, excluding the checksum.
 * - Other IPv4 and all fragments (flow = src, dst, protocol): the IP payload
 *   plus the MF bit and fragment offset; IP id, TTL and checksum excluded.
 * - ARP, IPv6, other EtherTypes and unparsable frames: PVM frames leave at
 *   once uncompared, SVM frames are dropped. ARP carries no application state
 *   and peers retry it; the lab runs without IPv6; QEMU's colo-compare also
 *   passes non-IP traffic uncompared.
 *
 * After a divergence nothing leaves: later PVM frames are held (within the
 * limits) until `checkpointed()`; the divergence is reported once. Memory is
 * bounded: past maxHeldFrames / maxHeldBytes held, or maxSecondaryBytes of
 * unmatched SVM data, or maxFlows busy flows, the comparator reports
 * "overflow" (a checkpoint is needed); PVM frames beyond twice the held
 * limits are dropped and counted (TCP retransmits them), as is excess SVM
 * data.
 */
import {
  ICMP,
  IPV4_FRAGMENT,
  type Ipv4Header,
  type Packet,
  type TcpSegment,
  parseFrame,
  seqAdd,
  seqDiff,
  seqGte,
} from "./packet.js";

// ---------------------------------------------------------------------------
// Public types and defaults.

export type DivergenceReason = "payload" | "length" | "timeout" | "overflow" | "secondary-extra";

export const DIVERGENCE_REASONS: readonly DivergenceReason[] = ["payload", "length", "timeout", "overflow", "secondary-extra"];

export interface Divergence {
  reason: DivergenceReason;
  /** Names the flow and the place, e.g. "tcp 10.77.0.10:6379>10.77.0.2:41000 at seq+1234: ...". */
  detail: string;
  /** The flow, as the detail names it ("tcp 10.77.0.10:6379>10.77.0.2:41000": protocol, addresses, ports); absent for a frame held for a checkpoint. */
  flow?: string;
  /** Where in the flow: TCP, sequence units from the PVM's ISN (the detail's "seq+N"); a datagram, the first octet that differs. */
  offset?: number;
  /** TCP whose ISN the comparator has not seen: the sequence number instead (the detail's "at seq N"). */
  seq?: number;
}

/** Where a divergence happened, beside its detail text. */
type Place = Pick<Divergence, "flow" | "offset" | "seq">;

export interface CompareResult {
  /** PVM frames that may now go to the LAN, in release order. */
  release: Uint8Array[];
  divergence?: Divergence;
}

export interface ComparatorOptions {
  compareTimeoutMs: number;
  maxHeldFrames: number;
  maxHeldBytes: number;
  maxSecondaryBytes: number;
  /** Flow table size; idle flows are evicted first. */
  maxFlows?: number;
}

export interface ComparatorStats {
  heldFrames: number;
  heldBytes: number;
  secondaryQueuedBytes: number;
  flows: number;
  /** PVM frames released because the SVM produced the same output. */
  releasedMatched: number;
  /** PVM frames released without comparison: non-IP, and TCP retransmissions below the watermark. */
  releasedUncompared: number;
  releasedAtCheckpoint: number;
  releasedAtFailover: number;
  /** SVM frames dropped: after a divergence, past maxSecondaryBytes, or with the flow table full. */
  droppedSecondary: number;
  /** SVM frames not compared: non-IP. */
  ignoredSecondary: number;
  /** PVM frames dropped past twice the held limits. */
  droppedPrimaryOverflow: number;
  flowsEvicted: number;
  divergences: Record<DivergenceReason, number>;
}

/**
 * QEMU's colo-compare default for `compare_timeout` (net/colo-compare.c,
 * DEFAULT_TIME_OUT_MS = 3000). Kept: it is well above Linux's initial TCP RTO
 * of 1 s (RFC 6298), so an SVM a little behind the PVM (scheduling, a slower
 * host) does not cost a checkpoint, while a silently diverged SVM holds
 * output back for at most a few seconds.
 */
export const DEFAULT_COMPARE_TIMEOUT_MS = 3000;
/** About one full TCP window of small segments for a handful of connections (QEMU: 1024 per connection). */
export const DEFAULT_MAX_HELD_FRAMES = 4096;
/** 8 MiB: ~65 ms of output at 1 Gbit/s; a checkpoint is due long before. */
export const DEFAULT_MAX_HELD_BYTES = 8 * 2 ** 20;
/** 8 MiB of SVM output not yet matched by the PVM. */
export const DEFAULT_MAX_SECONDARY_BYTES = 8 * 2 ** 20;
/** Flows remembered (idle ones are evicted first; per-flow state is a few hundred octets). */
export const DEFAULT_MAX_FLOWS = 8192;
/** PVM frames beyond this multiple of the held limits are dropped. */
export const HARD_CAP_FACTOR = 2;

export const DEFAULT_COMPARATOR_OPTIONS: Readonly<Required<ComparatorOptions>> = {
  compareTimeoutMs: DEFAULT_COMPARE_TIMEOUT_MS,
  maxHeldFrames: DEFAULT_MAX_HELD_FRAMES,
  maxHeldBytes: DEFAULT_MAX_HELD_BYTES,
  maxSecondaryBytes: DEFAULT_MAX_SECONDARY_BYTES,
  maxFlows: DEFAULT_MAX_FLOWS,
};

// ---------------------------------------------------------------------------
// A TCP stream in sequence space. Positions are plain numbers relative to a
// base sequence number, so they grow past 2^32 without wrapping.

/** Unit values: octets are 0..255; SYN and FIN are units of their own. */
const SYN_UNIT = 0x100;
const FIN_UNIT = 0x101;

/** A run of stream units: an optional SYN, octets, an optional FIN. */
interface Units {
  syn: boolean;
  data: Uint8Array;
  fin: boolean;
}

function unitCount(u: Units): number {
  return (u.syn ? 1 : 0) + u.data.length + (u.fin ? 1 : 0);
}

function unitAt(u: Units, i: number): number {
  if (u.syn) {
    if (i === 0) return SYN_UNIT;
    i -= 1;
  }
  if (i < u.data.length) return u.data[i] ?? 0;
  return FIN_UNIT;
}

function sliceUnits(u: Units, from: number, to: number): Units {
  const synShift = u.syn ? 1 : 0;
  const dataFrom = Math.min(Math.max(from - synShift, 0), u.data.length);
  const dataTo = Math.min(Math.max(to - synShift, 0), u.data.length);
  return {
    syn: u.syn && from === 0 && to > 0,
    data: u.data.subarray(dataFrom, dataTo),
    fin: u.fin && to === unitCount(u) && from < to,
  };
}

function describeUnit(unit: number): string {
  if (unit === SYN_UNIT) return "SYN";
  if (unit === FIN_UNIT) return "FIN";
  return `0x${unit.toString(16).padStart(2, "0")}`;
}

interface Piece {
  start: number;
  units: Units;
  /** When the piece arrived (SVM pieces: for "secondary-extra"). */
  at: number;
}

function pieceEnd(p: Piece): number {
  return p.start + unitCount(p.units);
}

type Interval = readonly [number, number];

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
class IntervalSet {
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
class PieceStore {
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

interface Mismatch {
  position: number;
  pvm: number;
  svm: number;
}

type IngestResult = { kind: "ok" } | { kind: "mismatch"; mismatch: Mismatch } | { kind: "overflow" };

/** An SVM SYN that arrived before the PVM's: placed once the PVM's ISN is known. */
interface DeferredSyn {
  seq: number;
  /** Its ack number (SYN-ACK), credited to the stream it is placed in. */
  ack: number | undefined;
  units: Units;
  at: number;
}

/** One direction of a TCP connection, guest -> peer, as both VMs send it. */
class TcpStream {
  /** Sequence number at position 0; set by the first segment seen. */
  base: number | undefined;
  /** Everything below this position is settled: compared, or sent before the flow state began. */
  matched = 0;
  /** The watermark was placed at the PVM's first segment. */
  pvmAnchored = false;
  pvmIsn: number | undefined;
  /** The seq of the first SVM SYN placed on the PVM's (the SVM's ISN, or the PVM's once rewritten). */
  svmSynSeq: number | undefined;
  svmMaxAck: number | undefined;
  svmRst = false;
  /** Compared ranges above the watermark (where a gap keeps it from advancing). */
  readonly compared = new IntervalSet();
  readonly pvmPending = new PieceStore();
  readonly svmPending: PieceStore;
  deferredSyns: DeferredSyn[] = [];

  constructor(reserveSecondary: (delta: number) => boolean) {
    this.svmPending = new PieceStore(reserveSecondary);
  }

  creditSvmAck(ack: number): void {
    if (this.svmMaxAck === undefined || seqGte(ack, this.svmMaxAck)) this.svmMaxAck = ack;
  }

  hasBase(): boolean {
    return this.base !== undefined;
  }

  /** Position of `seq`, taken within 2^31 of the watermark (RFC 1982). */
  position(seq: number): number {
    const base = this.base ?? seq;
    return this.matched + seqDiff(seq, seqAdd(base, this.matched));
  }

  sequenceAt(position: number): number {
    return seqAdd(this.base ?? 0, position);
  }

  /** The first PVM segment: nothing below it is compared any more. */
  anchor(position: number): void {
    this.pvmAnchored = true;
    this.matched = position;
    this.compared.dropBelow(position);
    this.svmPending.dropBelow(position);
    this.advance();
  }

  settled(start: number, end: number): boolean {
    if (end <= this.matched || end <= start) return true;
    return this.compared.gaps(Math.max(start, this.matched), end).length === 0;
  }

  svmQueuedUnits(): number {
    let n = this.svmPending.units;
    for (const d of this.deferredSyns) n += unitCount(d.units);
    return n;
  }

  /**
   * New units from one side at [start, start + n): compared with what the
   * other side has pending; the rest waits for the other side.
   */
  ingest(side: "pvm" | "svm", start: number, units: Units, nowMs: number): IngestResult {
    const end = start + unitCount(units);
    // Until the PVM's first segment places the watermark, no SVM data is below it.
    const floor = this.pvmAnchored ? this.matched : -Infinity;
    if (end <= floor) return { kind: "ok" };
    const own = side === "pvm" ? this.pvmPending : this.svmPending;
    const other = side === "pvm" ? this.svmPending : this.pvmPending;
    const keep = (from: number, to: number): boolean => {
      const slice = sliceUnits(units, from - start, to - start);
      // SVM octets are copied: the caller's buffer is not ours to keep.
      const stored = side === "svm" ? { ...slice, data: slice.data.slice() } : slice;
      return own.add({ start: from, units: stored, at: nowMs });
    };
    for (const [a, b] of this.compared.gaps(Math.max(start, floor), end)) {
      for (const [c, d] of own.gaps(a, b)) {
        let cursor = c;
        for (const q of other.overlapping(c, d)) {
          if (q.start > cursor && !keep(cursor, q.start)) return { kind: "overflow" };
          const qEnd = pieceEnd(q);
          for (let p = q.start; p < qEnd; p++) {
            const mine = unitAt(units, p - start);
            const theirs = unitAt(q.units, p - q.start);
            if (mine !== theirs) {
              const mismatch = side === "pvm" ? { position: p, pvm: mine, svm: theirs } : { position: p, pvm: theirs, svm: mine };
              return { kind: "mismatch", mismatch };
            }
          }
          other.remove(q.start, qEnd);
          this.compared.add(q.start, qEnd);
          cursor = qEnd;
        }
        if (cursor < d && !keep(cursor, d)) return { kind: "overflow" };
      }
    }
    this.advance();
    return { kind: "ok" };
  }

  private advance(): void {
    if (!this.pvmAnchored) return;
    for (let first = this.compared.first(); first && first[0] <= this.matched; first = this.compared.first()) {
      this.matched = Math.max(this.matched, first[1]);
      this.compared.dropBelow(this.matched);
    }
    this.svmPending.dropBelow(this.matched);
    this.pvmPending.dropBelow(this.matched);
  }
}

// ---------------------------------------------------------------------------
// Flows and held frames.

type HeldWait =
  | { kind: "tcp"; start: number; end: number; ack: number | undefined; rst: boolean; retransmission: boolean }
  | { kind: "datagram"; content: Uint8Array; matched: boolean }
  /** Held after a divergence: leaves only at the checkpoint. */
  | { kind: "checkpoint" }
  /** Cannot be compared: waits for the timeout and the checkpoint. */
  | { kind: "blocked"; why: string };

interface HeldFrame {
  id: number;
  frame: Uint8Array;
  at: number;
  flow: Flow | undefined;
  wait: HeldWait;
}

interface QueuedDatagram {
  content: Uint8Array;
  at: number;
}

interface FlowCommon {
  key: string;
  /** "tcp 10.77.0.10:6379>10.77.0.2:41000", "udp ...", "icmp ...", "ip ...". */
  label: string;
  held: HeldFrame[];
}

interface TcpFlow extends FlowCommon {
  kind: "tcp";
  stream: TcpStream;
}

interface DatagramFlow extends FlowCommon {
  kind: "datagram";
  svmQueue: QueuedDatagram[];
  svmQueuedBytes: number;
}

type Flow = TcpFlow | DatagramFlow;

type IpPacket = Extract<Packet, { ip: Ipv4Header }>;

function isIp(p: Packet): p is IpPacket {
  return p.kind === "tcp" || p.kind === "udp" || p.kind === "icmp" || p.kind === "ipv4";
}

function flowLabel(p: IpPacket): string {
  const { srcText, dstText } = p.ip;
  switch (p.kind) {
    case "tcp":
      return `tcp ${srcText}:${p.tcp.srcPort}>${dstText}:${p.tcp.dstPort}`;
    case "udp":
      return `udp ${srcText}:${p.udp.srcPort}>${dstText}:${p.udp.dstPort}`;
    case "icmp": {
      const id = p.icmp.identifier === undefined ? "" : ` id ${p.icmp.identifier}`;
      return `icmp ${srcText}>${dstText} type ${p.icmp.type} code ${p.icmp.code}${id}`;
    }
    case "ipv4":
      return `ip ${srcText}>${dstText} proto ${p.ip.protocol}`;
  }
}

/** Every checksum field is 16 bits (RFC 1071). */
const CHECKSUM_LENGTH = 2;

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** What a datagram flow compares: see the file header. */
function datagramContent(p: Exclude<IpPacket, { kind: "tcp" }>): Uint8Array {
  switch (p.kind) {
    case "udp":
      return p.udp.payload;
    case "icmp":
      return concat(p.icmp.message.subarray(0, ICMP.checksum), p.icmp.message.subarray(ICMP.checksum + CHECKSUM_LENGTH));
    case "ipv4": {
      const fragment = p.ip.flagsFragment & (IPV4_FRAGMENT.moreFragments | IPV4_FRAGMENT.offsetMask);
      return concat(Uint8Array.of(fragment >> 8, fragment & 0xff), p.ip.payload);
    }
  }
}

function compareDatagrams(pvm: Uint8Array, svm: Uint8Array): { reason: "length" | "payload"; detail: string; offset?: number } | undefined {
  if (pvm.length !== svm.length) return { reason: "length", detail: `PVM sent ${pvm.length} octets, SVM ${svm.length}` };
  for (let i = 0; i < pvm.length; i++) {
    if (pvm[i] !== svm[i]) {
      return { reason: "payload", offset: i, detail: `octet ${i} differs: PVM 0x${(pvm[i] ?? 0).toString(16)}, SVM 0x${(svm[i] ?? 0).toString(16)}` };
    }
  }
  return undefined;
}

function tcpUnits(tcp: TcpSegment): Units {
  return { syn: tcp.flags.syn, data: tcp.payload, fin: tcp.flags.fin };
}

function zeroDivergences(): Record<DivergenceReason, number> {
  return { payload: 0, length: 0, timeout: 0, overflow: 0, "secondary-extra": 0 };
}

// ---------------------------------------------------------------------------

export class Comparator {
  private readonly options: Required<ComparatorOptions>;
  /** Every held PVM frame, in arrival order. */
  private held = new Map<number, HeldFrame>();
  private nextId = 0;
  private heldBytes = 0;
  /** Flows in least-recently-used order. */
  private flows = new Map<string, Flow>();
  private secondaryBytes = 0;
  private diverged: Divergence | undefined;
  private counters = {
    releasedMatched: 0,
    releasedUncompared: 0,
    releasedAtCheckpoint: 0,
    releasedAtFailover: 0,
    droppedSecondary: 0,
    ignoredSecondary: 0,
    droppedPrimaryOverflow: 0,
    flowsEvicted: 0,
  };
  private divergences = zeroDivergences();

  constructor(options: Partial<ComparatorOptions> = {}) {
    this.options = { ...DEFAULT_COMPARATOR_OPTIONS, ...options };
  }

  /** A frame the PVM sent. */
  primary(frame: Uint8Array, nowMs: number): CompareResult {
    if (this.diverged) {
      this.holdUntilCheckpoint(frame, nowMs);
      return { release: [] };
    }
    const p = parseFrame(frame);
    if (!isIp(p)) {
      this.counters.releasedUncompared++;
      return { release: [frame] };
    }
    const { maxHeldFrames, maxHeldBytes } = this.options;
    if (this.held.size + 1 > maxHeldFrames || this.heldBytes + frame.length > maxHeldBytes) {
      const divergence = this.diverge("overflow", `${flowLabel(p)}: ${this.held.size + 1} frames / ${this.heldBytes + frame.length} octets held exceed ${maxHeldFrames} / ${maxHeldBytes}`, { flow: flowLabel(p) });
      this.holdUntilCheckpoint(frame, nowMs);
      return { release: [], divergence };
    }
    const flow = this.flowFor(p);
    if (!flow) {
      const divergence = this.diverge("overflow", `${flowLabel(p)}: flow table full (${this.flows.size} busy flows)`, { flow: flowLabel(p) });
      this.holdUntilCheckpoint(frame, nowMs);
      return { release: [], divergence };
    }
    const divergence = flow.kind === "tcp" && p.kind === "tcp" ? this.primaryTcp(flow, p.tcp, frame, nowMs) : this.primaryDatagram(flow, p, frame, nowMs);
    if (divergence) return { release: [], divergence };
    return { release: this.releaseFrom(flow) };
  }

  /** A frame the SVM sent (TCP already rewritten into the PVM's sequence space). */
  secondary(frame: Uint8Array, nowMs: number): CompareResult {
    if (this.diverged) {
      this.counters.droppedSecondary++;
      return { release: [] };
    }
    const p = parseFrame(frame);
    if (!isIp(p)) {
      this.counters.ignoredSecondary++;
      return { release: [] };
    }
    const flow = this.flowFor(p);
    if (!flow) {
      this.counters.droppedSecondary++;
      return { release: [], divergence: this.diverge("overflow", `${flowLabel(p)}: flow table full (${this.flows.size} busy flows)`, { flow: flowLabel(p) }) };
    }
    const divergence = flow.kind === "tcp" && p.kind === "tcp" ? this.secondaryTcp(flow, p.tcp, nowMs) : this.secondaryDatagram(flow, p, nowMs);
    if (divergence) return { release: [], divergence };
    return { release: this.releaseFrom(flow) };
  }

  /** A held PVM frame older than compareTimeoutMs ("timeout"), or SVM output unmatched as long ("secondary-extra"). */
  expired(nowMs: number): Divergence | undefined {
    if (this.diverged) return undefined;
    const timeout = this.options.compareTimeoutMs;
    const oldest = this.held.values().next();
    if (!oldest.done && nowMs - oldest.value.at > timeout) {
      const wait = this.describeWait(oldest.value);
      return this.diverge("timeout", `${wait.text}, held ${nowMs - oldest.value.at} ms`, wait.place);
    }
    for (const flow of this.flows.values()) {
      const extra = this.oldestSecondary(flow);
      if (extra && nowMs - extra.at > timeout) {
        return this.diverge("secondary-extra", `${extra.detail}, unmatched for ${nowMs - extra.at} ms`, extra.place);
      }
    }
    return undefined;
  }

  /** A checkpoint made the SVM identical to the PVM: every held frame may go, in original order. */
  checkpointed(): Uint8Array[] {
    const out = this.reset();
    this.counters.releasedAtCheckpoint += out.length;
    return out;
  }

  /** The secondary is lost (failover): every held frame goes, in original order. */
  releaseAll(): Uint8Array[] {
    const out = this.reset();
    this.counters.releasedAtFailover += out.length;
    return out;
  }

  stats(): ComparatorStats {
    return {
      heldFrames: this.held.size,
      heldBytes: this.heldBytes,
      secondaryQueuedBytes: this.secondaryBytes,
      flows: this.flows.size,
      ...this.counters,
      divergences: { ...this.divergences },
    };
  }

  // -------------------------------------------------------------------------

  private reset(): Uint8Array[] {
    const out = [...this.held.values()].map((h) => h.frame);
    this.held = new Map();
    this.heldBytes = 0;
    this.flows = new Map();
    this.secondaryBytes = 0;
    this.diverged = undefined;
    return out;
  }

  private diverge(reason: DivergenceReason, detail: string, place: Place = {}): Divergence {
    const divergence = { reason, detail, ...place };
    this.diverged = divergence;
    this.divergences[reason]++;
    return divergence;
  }

  /** Reserves (delta > 0) or frees SVM queue space; false when the reservation does not fit. */
  private accountSecondary(delta: number): boolean {
    if (delta > 0 && this.secondaryBytes + delta > this.options.maxSecondaryBytes) return false;
    this.secondaryBytes += delta;
    return true;
  }

  private hold(frame: Uint8Array, nowMs: number, flow: Flow | undefined, wait: HeldWait): HeldFrame {
    const h: HeldFrame = { id: this.nextId++, frame, at: nowMs, flow, wait };
    this.held.set(h.id, h);
    this.heldBytes += frame.length;
    flow?.held.push(h);
    return h;
  }

  private holdUntilCheckpoint(frame: Uint8Array, nowMs: number): void {
    const cap = HARD_CAP_FACTOR;
    if (this.held.size + 1 > cap * this.options.maxHeldFrames || this.heldBytes + frame.length > cap * this.options.maxHeldBytes) {
      this.counters.droppedPrimaryOverflow++;
      return;
    }
    this.hold(frame, nowMs, undefined, { kind: "checkpoint" });
  }

  private flowFor(p: IpPacket): Flow | undefined {
    const key = flowLabel(p);
    const existing = this.flows.get(key);
    if (existing) {
      // Most recently used goes last.
      this.flows.delete(key);
      this.flows.set(key, existing);
      return existing;
    }
    if (this.flows.size >= this.options.maxFlows && !this.evictIdleFlow()) return undefined;
    const flow: Flow =
      p.kind === "tcp"
        ? { kind: "tcp", key, label: key, held: [], stream: new TcpStream((delta) => this.accountSecondary(delta)) }
        : { kind: "datagram", key, label: key, held: [], svmQueue: [], svmQueuedBytes: 0 };
    this.flows.set(key, flow);
    return flow;
  }

  private evictIdleFlow(): boolean {
    for (const [key, flow] of this.flows) {
      const svmUnits = flow.kind === "tcp" ? flow.stream.svmQueuedUnits() : flow.svmQueuedBytes;
      if (flow.held.length === 0 && svmUnits === 0) {
        this.flows.delete(key);
        this.counters.flowsEvicted++;
        return true;
      }
    }
    return false;
  }

  /** Releases the flow's held frames from the head while they may go. */
  private releaseFrom(flow: Flow): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (let h = flow.held[0]; h && this.mayRelease(flow, h); h = flow.held[0]) {
      flow.held.shift();
      this.held.delete(h.id);
      this.heldBytes -= h.frame.length;
      if (h.wait.kind === "tcp" && h.wait.retransmission) this.counters.releasedUncompared++;
      else this.counters.releasedMatched++;
      out.push(h.frame);
    }
    return out;
  }

  private mayRelease(flow: Flow, h: HeldFrame): boolean {
    const wait = h.wait;
    switch (wait.kind) {
      case "checkpoint":
      case "blocked":
        return false;
      case "datagram":
        return wait.matched;
      case "tcp": {
        if (flow.kind !== "tcp") return false;
        const s = flow.stream;
        if (!s.settled(wait.start, wait.end)) return false;
        if (wait.rst && !s.svmRst) return false;
        if (wait.ack !== undefined && (s.svmMaxAck === undefined || !seqGte(s.svmMaxAck, wait.ack))) return false;
        return true;
      }
    }
  }

  // -------------------------------------------------------------------------
  // TCP.

  private where(flow: TcpFlow, position: number): string {
    const p = this.place(flow, position);
    return p.offset !== undefined ? `${flow.label} at seq+${p.offset}` : `${flow.label} at seq ${p.seq ?? "?"}`;
  }

  private place(flow: TcpFlow, position: number): Place {
    const s = flow.stream;
    if (s.pvmIsn !== undefined) return { flow: flow.label, offset: position - s.position(s.pvmIsn) };
    return { flow: flow.label, seq: s.sequenceAt(position) };
  }

  private ingestResult(flow: TcpFlow, result: IngestResult): Divergence | undefined {
    switch (result.kind) {
      case "ok":
        return undefined;
      case "overflow":
        this.counters.droppedSecondary++;
        return this.diverge("overflow", `${flow.label}: SVM data unmatched past ${this.options.maxSecondaryBytes} octets`, { flow: flow.label });
      case "mismatch": {
        const { position, pvm, svm } = result.mismatch;
        const flagInvolved = pvm > 0xff || svm > 0xff;
        return this.diverge(flagInvolved ? "length" : "payload", `${this.where(flow, position)}: PVM ${describeUnit(pvm)}, SVM ${describeUnit(svm)}`, this.place(flow, position));
      }
    }
  }

  private primaryTcp(flow: TcpFlow, tcp: TcpSegment, frame: Uint8Array, nowMs: number): Divergence | undefined {
    let s = flow.stream;
    // A SYN other than the stream's own opens a new connection on the same addresses (a SYN is
    // never sent after data, so an anchored stream without a known ISN belongs to an older one).
    if (tcp.flags.syn && s.pvmAnchored && tcp.seq !== s.pvmIsn) {
      if (flow.held.length > 0) {
        // Its positions would mean nothing in the old stream: it leaves at the next checkpoint.
        this.hold(frame, nowMs, flow, { kind: "blocked", why: `new connection (ISN ${tcp.seq}) while the previous one's frames are held` });
        return undefined;
      }
      const deferred = s.deferredSyns;
      s.svmPending.clear();
      s = flow.stream = new TcpStream((delta) => this.accountSecondary(delta));
      s.deferredSyns = deferred;
    }
    const ack = tcp.flags.ack ? tcp.ack : undefined;
    if (tcp.flags.rst) {
      this.hold(frame, nowMs, flow, { kind: "tcp", start: 0, end: 0, ack, rst: true, retransmission: false });
      return undefined;
    }
    if (!s.hasBase()) s.base = tcp.seq;
    if (!s.pvmAnchored) s.anchor(s.position(tcp.seq));
    const start = s.position(tcp.seq);
    const units = tcpUnits(tcp);
    const end = start + unitCount(units);
    const retransmission = end > start && end <= s.matched;
    this.hold(frame, nowMs, flow, { kind: "tcp", start, end, ack, rst: false, retransmission });
    const divergence = this.ingestResult(flow, s.ingest("pvm", start, units, nowMs));
    if (divergence) return divergence;
    if (tcp.flags.syn && s.pvmIsn === undefined) {
      s.pvmIsn = tcp.seq;
      const deferred = s.deferredSyns;
      s.deferredSyns = [];
      for (const d of deferred) {
        this.accountSecondary(-unitCount(d.units));
        const placed = this.placeSvmSyn(flow, d.seq, d.ack, d.units, d.at);
        if (placed) return placed;
      }
    }
    return undefined;
  }

  /** Puts an SVM SYN segment's units at the PVM's SYN, or defers it until that is known. */
  private placeSvmSyn(flow: TcpFlow, seq: number, ack: number | undefined, units: Units, nowMs: number): Divergence | undefined {
    const s = flow.stream;
    const sameConnection = s.svmSynSeq === undefined || seq === s.svmSynSeq || seq === s.pvmIsn;
    if (s.pvmIsn === undefined || !sameConnection) {
      const n = unitCount(units);
      if (!this.accountSecondary(n)) {
        this.counters.droppedSecondary++;
        return this.diverge("overflow", `${flow.label}: SVM data unmatched past ${this.options.maxSecondaryBytes} octets`, { flow: flow.label });
      }
      s.deferredSyns.push({ seq, ack, units: { ...units, data: units.data.slice() }, at: nowMs });
      return undefined;
    }
    s.svmSynSeq ??= seq;
    if (ack !== undefined) s.creditSvmAck(ack);
    if (!s.hasBase()) s.base = s.pvmIsn;
    return this.ingestResult(flow, s.ingest("svm", s.position(s.pvmIsn), units, nowMs));
  }

  private secondaryTcp(flow: TcpFlow, tcp: TcpSegment, nowMs: number): Divergence | undefined {
    const s = flow.stream;
    const ack = tcp.flags.ack ? tcp.ack : undefined;
    const units = tcpUnits(tcp);
    // A SYN may belong to a newer connection than the stream's: its ack counts where it is placed.
    if (tcp.flags.syn && !tcp.flags.rst) return this.placeSvmSyn(flow, tcp.seq, ack, units, nowMs);
    if (ack !== undefined) s.creditSvmAck(ack);
    if (tcp.flags.rst) {
      s.svmRst = true;
      return undefined;
    }
    if (unitCount(units) === 0) return undefined;
    if (!s.hasBase()) s.base = tcp.seq;
    return this.ingestResult(flow, s.ingest("svm", s.position(tcp.seq), units, nowMs));
  }

  // -------------------------------------------------------------------------
  // UDP, ICMP, other IPv4.

  private primaryDatagram(flow: Flow, p: IpPacket, frame: Uint8Array, nowMs: number): Divergence | undefined {
    if (flow.kind !== "datagram" || p.kind === "tcp") return undefined;
    const content = datagramContent(p);
    const h = this.hold(frame, nowMs, flow, { kind: "datagram", content, matched: false });
    const waiting = flow.held.some((x) => x !== h && x.wait.kind === "datagram" && !x.wait.matched);
    const queued = flow.svmQueue[0];
    if (waiting || !queued) return undefined;
    flow.svmQueue.shift();
    flow.svmQueuedBytes -= queued.content.length;
    this.accountSecondary(-queued.content.length);
    return this.matchDatagram(flow, h, queued.content);
  }

  private secondaryDatagram(flow: Flow, p: IpPacket, nowMs: number): Divergence | undefined {
    if (flow.kind !== "datagram" || p.kind === "tcp") return undefined;
    const content = datagramContent(p);
    const waiting = flow.held.find((x) => x.wait.kind === "datagram" && !x.wait.matched);
    if (waiting) return this.matchDatagram(flow, waiting, content);
    if (!this.accountSecondary(content.length)) {
      this.counters.droppedSecondary++;
      return this.diverge("overflow", `${flow.label}: SVM data unmatched past ${this.options.maxSecondaryBytes} octets`, { flow: flow.label });
    }
    flow.svmQueue.push({ content: content.slice(), at: nowMs });
    flow.svmQueuedBytes += content.length;
    return undefined;
  }

  private matchDatagram(flow: DatagramFlow, h: HeldFrame, svm: Uint8Array): Divergence | undefined {
    if (h.wait.kind !== "datagram") return undefined;
    const difference = compareDatagrams(h.wait.content, svm);
    if (difference) return this.diverge(difference.reason, `${flow.label}: ${difference.detail}`, { flow: flow.label, ...(difference.offset !== undefined ? { offset: difference.offset } : {}) });
    h.wait.matched = true;
    return undefined;
  }

  // -------------------------------------------------------------------------
  // Diagnostics.

  private describeWait(h: HeldFrame): { text: string; place: Place } {
    const flow = h.flow;
    const wait = h.wait;
    if (!flow) return { text: "frame held for a checkpoint", place: {} };
    const on = (text: string) => ({ text: `${flow.label}: ${text}`, place: { flow: flow.label } });
    if (wait.kind === "blocked") return on(wait.why);
    if (wait.kind === "datagram") return on("the SVM sent no matching datagram");
    if (wait.kind !== "tcp" || flow.kind !== "tcp") return { text: flow.label, place: { flow: flow.label } };
    const s = flow.stream;
    if (!s.settled(wait.start, wait.end)) {
      const gap = s.compared.gaps(Math.max(wait.start, s.matched), wait.end)[0] ?? [wait.start, wait.end];
      return { text: `${this.where(flow, gap[0])}: SVM has not sent ${gap[1] - gap[0]} units up to seq ${s.sequenceAt(gap[1])}`, place: this.place(flow, gap[0]) };
    }
    if (wait.rst && !s.svmRst) return on("PVM sent RST, SVM did not");
    if (wait.ack !== undefined) {
      const svmAck = s.svmMaxAck === undefined ? "none" : String(s.svmMaxAck);
      return on(`PVM acknowledged up to ${wait.ack}, SVM only to ${svmAck}`);
    }
    return { text: flow.label, place: { flow: flow.label } };
  }

  private oldestSecondary(flow: Flow): { at: number; detail: string; place: Place } | undefined {
    if (flow.kind === "datagram") {
      const q = flow.svmQueue[0];
      return q ? { at: q.at, detail: `${flow.label}: SVM sent a datagram the PVM did not`, place: { flow: flow.label } } : undefined;
    }
    const s = flow.stream;
    let oldest: { at: number; detail: string; place: Place } | undefined;
    const piece = s.svmPending.oldest();
    if (piece) oldest = { at: piece.at, detail: `${this.where(flow, piece.start)}: SVM sent ${unitCount(piece.units)} units the PVM did not`, place: this.place(flow, piece.start) };
    for (const d of s.deferredSyns) {
      if (!oldest || d.at < oldest.at) oldest = { at: d.at, detail: `${flow.label}: SVM sent a SYN (seq ${d.seq}) the PVM did not`, place: { flow: flow.label, seq: d.seq } };
    }
    return oldest;
  }
}
