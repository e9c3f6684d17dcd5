/**
 * The comparator's flows and held frames: which frames are compared (IPv4),
 * the flow each belongs to and its label, a flow's state (a TCP stream, or
 * queued SVM datagrams), what a held PVM frame waits for and when it may
 * leave, and how a flow's wait or unmatched SVM output is described.
 */
import type { Place } from "./comparator-types.js";
import { type Ipv4Header, type Packet, seqGte } from "./packet.js";
import { unitCount } from "./stream-units.js";
import type { TcpStream } from "./tcp-stream.js";

export type HeldWait =
  | { kind: "tcp"; start: number; end: number; ack: number | undefined; rst: boolean; retransmission: boolean }
  | { kind: "datagram"; content: Uint8Array; matched: boolean }
  /** Held after a divergence: leaves only at the checkpoint. */
  | { kind: "checkpoint" }
  /** Cannot be compared: waits for the timeout and the checkpoint. */
  | { kind: "blocked"; why: string };

export interface HeldFrame {
  id: number;
  frame: Uint8Array;
  at: number;
  flow: Flow | undefined;
  wait: HeldWait;
}

export interface QueuedDatagram {
  content: Uint8Array;
  at: number;
}

export interface FlowCommon {
  key: string;
  /** "tcp 10.77.0.10:6379>10.77.0.2:41000", "udp ...", "icmp ...", "ip ...". */
  label: string;
  held: HeldFrame[];
}

export interface TcpFlow extends FlowCommon {
  kind: "tcp";
  stream: TcpStream;
}

export interface DatagramFlow extends FlowCommon {
  kind: "datagram";
  svmQueue: QueuedDatagram[];
  svmQueuedBytes: number;
}

export type Flow = TcpFlow | DatagramFlow;

export type IpPacket = Extract<Packet, { ip: Ipv4Header }>;

export function isIp(p: Packet): p is IpPacket {
  return p.kind === "tcp" || p.kind === "udp" || p.kind === "icmp" || p.kind === "ipv4";
}

export function flowLabel(p: IpPacket): string {
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

export function mayRelease(flow: Flow, h: HeldFrame): boolean {
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

export function where(flow: TcpFlow, position: number): string {
  const p = place(flow, position);
  return p.offset !== undefined ? `${flow.label} at seq+${p.offset}` : `${flow.label} at seq ${p.seq ?? "?"}`;
}

export function place(flow: TcpFlow, position: number): Place {
  const s = flow.stream;
  if (s.pvmIsn !== undefined) return { flow: flow.label, offset: position - s.position(s.pvmIsn) };
  return { flow: flow.label, seq: s.sequenceAt(position) };
}

// ---------------------------------------------------------------------------
// Diagnostics.

export function describeWait(h: HeldFrame): { text: string; place: Place } {
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
    return { text: `${where(flow, gap[0])}: SVM has not sent ${gap[1] - gap[0]} units up to seq ${s.sequenceAt(gap[1])}`, place: place(flow, gap[0]) };
  }
  if (wait.rst && !s.svmRst) return on("PVM sent RST, SVM did not");
  if (wait.ack !== undefined) {
    const svmAck = s.svmMaxAck === undefined ? "none" : String(s.svmMaxAck);
    return on(`PVM acknowledged up to ${wait.ack}, SVM only to ${svmAck}`);
  }
  return { text: flow.label, place: { flow: flow.label } };
}

export function oldestSecondary(flow: Flow): { at: number; detail: string; place: Place } | undefined {
  if (flow.kind === "datagram") {
    const q = flow.svmQueue[0];
    return q ? { at: q.at, detail: `${flow.label}: SVM sent a datagram the PVM did not`, place: { flow: flow.label } } : undefined;
  }
  const s = flow.stream;
  let oldest: { at: number; detail: string; place: Place } | undefined;
  const piece = s.svmPending.oldest();
  if (piece) oldest = { at: piece.at, detail: `${where(flow, piece.start)}: SVM sent ${unitCount(piece.units)} units the PVM did not`, place: place(flow, piece.start) };
  for (const d of s.deferredSyns) {
    if (!oldest || d.at < oldest.at) oldest = { at: d.at, detail: `${flow.label}: SVM sent a SYN (seq ${d.seq}) the PVM did not`, place: { flow: flow.label, seq: d.seq } };
  }
  return oldest;
}
