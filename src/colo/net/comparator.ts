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
  type CompareResult,
  type ComparatorOptions,
  type ComparatorStats,
  DEFAULT_COMPARATOR_OPTIONS,
  type Divergence,
  type DivergenceReason,
  HARD_CAP_FACTOR,
  type Place,
  zeroDivergences,
} from "./comparator-types.js";
import { LatencySamples } from "./latency-samples.js";
import { compareDatagrams, datagramContent } from "./datagram.js";
import { type DatagramFlow, type Flow, type HeldFrame, type HeldWait, type IpPacket, type TcpFlow, describeWait, flowLabel, isIp, mayRelease, oldestSecondary, place, where } from "./flows.js";
import { type TcpSegment, parseFrame } from "./packet.js";
import { type Units, describeUnit, unitCount } from "./stream-units.js";
import { type IngestResult, TcpStream, tcpUnits } from "./tcp-stream.js";

export {
  type CompareResult,
  type ComparatorOptions,
  type ComparatorStats,
  DEFAULT_COMPARATOR_OPTIONS,
  DEFAULT_COMPARE_TIMEOUT_MS,
  DEFAULT_MAX_FLOWS,
  DEFAULT_MAX_HELD_BYTES,
  DEFAULT_MAX_HELD_FRAMES,
  DEFAULT_MAX_SECONDARY_BYTES,
  DIVERGENCE_REASONS,
  type Divergence,
  type DivergenceReason,
  HARD_CAP_FACTOR,
} from "./comparator-types.js";

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
  /** Hold times of the last HOLD_SAMPLES frames released by compare. */
  private readonly holdTimes = new LatencySamples(HOLD_SAMPLES);

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
    return { release: this.releaseFrom(flow, nowMs) };
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
    return { release: this.releaseFrom(flow, nowMs) };
  }

  /** A held PVM frame older than compareTimeoutMs ("timeout"), or SVM output unmatched as long ("secondary-extra"). */
  expired(nowMs: number): Divergence | undefined {
    if (this.diverged) return undefined;
    const timeout = this.options.compareTimeoutMs;
    const oldest = this.held.values().next();
    if (!oldest.done && nowMs - oldest.value.at > timeout) {
      const wait = describeWait(oldest.value);
      return this.diverge("timeout", `${wait.text}, held ${nowMs - oldest.value.at} ms`, wait.place);
    }
    for (const flow of this.flows.values()) {
      const extra = oldestSecondary(flow);
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
      holdMs: this.holdTimes.summary(),
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
  private releaseFrom(flow: Flow, nowMs: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (let h = flow.held[0]; h && mayRelease(flow, h); h = flow.held[0]) {
      flow.held.shift();
      this.held.delete(h.id);
      this.heldBytes -= h.frame.length;
      if (h.wait.kind === "tcp" && h.wait.retransmission) this.counters.releasedUncompared++;
      else {
        this.counters.releasedMatched++;
        this.holdTimes.record(nowMs - h.at);
      }
      out.push(h.frame);
    }
    return out;
  }

  // -------------------------------------------------------------------------
  // TCP.

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
        return this.diverge(flagInvolved ? "length" : "payload", `${where(flow, position)}: PVM ${describeUnit(pvm)}, SVM ${describeUnit(svm)}`, place(flow, position));
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

}

/** Frames whose hold time the comparator keeps (stats().holdMs). */
const HOLD_SAMPLES = 1024;

