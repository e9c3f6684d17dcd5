/**
 * The proxy's pure parts together: a client talks to the PVM; its frames are
 * mirrored through the secondary's rewriter to the SVM; the SVM's output goes
 * through the rewriter into the primary's comparator. The two VMs pick
 * different ISNs and timestamp bases and segment their output differently.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Comparator } from "./comparator.js";
import { TcpRewriter } from "./tcp-rewriter.js";
import { checkChecksums, parseFrame, seqAdd } from "./packet.js";
import { type TcpSpec, pattern, tcpFrame, toGuest } from "./testing.js";

/** A guest's TCP endpoint, reduced to what it puts on the wire. */
class GuestTcp {
  private next: number;
  private received: number;
  private readonly tsBase: number;
  private lastPeerTs = 0;
  frames: Uint8Array[] = [];

  constructor(
    readonly isn: number,
    tsBase: number,
    private readonly name: "pvm" | "svm",
  ) {
    this.next = seqAdd(isn, 1);
    this.received = 0;
    this.tsBase = tsBase;
  }

  private emit(spec: Omit<TcpSpec, "ts">, clock: number): Uint8Array {
    // IP ids and windows differ between the VMs; the comparator must not care.
    const id = this.name === "pvm" ? 1000 + this.frames.length : 30000 + this.frames.length * 7;
    const window = this.name === "pvm" ? 64000 : 61000;
    const frame = tcpFrame({ ...spec, id, window, ts: { val: seqAdd(this.tsBase, clock), ecr: this.lastPeerTs } });
    this.frames.push(frame);
    return frame;
  }

  /** The mirrored client frame as this VM receives it. */
  receive(frame: Uint8Array): void {
    const p = parseFrame(frame);
    assert.ok(p.kind === "tcp");
    if (p.tcp.timestamps) this.lastPeerTs = p.tcp.timestamps.tsval;
    const end = seqAdd(p.tcp.seq, p.tcp.payload.length + (p.tcp.flags.syn ? 1 : 0) + (p.tcp.flags.fin ? 1 : 0));
    if (p.tcp.flags.syn || p.tcp.payload.length > 0 || p.tcp.flags.fin) this.received = end;
    if (p.tcp.flags.ack) {
      // Acks reach the guest in its own sequence space: the rewriter's job.
      assert.ok(((p.tcp.ack - this.next) | 0) <= 0, `${this.name}: ack ${p.tcp.ack} beyond what it sent (next ${this.next})`);
    }
    if (p.tcp.timestamps && p.tcp.flags.ack && !p.tcp.flags.syn) {
      const echoed = p.tcp.timestamps.tsecr;
      assert.ok(((echoed - this.tsBase) | 0) >= 0 && ((echoed - this.tsBase) | 0) < 1000, `${this.name}: TSecr ${echoed} not from its own clock`);
    }
  }

  synAck(clock: number): Uint8Array {
    return this.emit({ seq: this.isn, ack: this.received, flags: "SA", mss: 1460 }, clock);
  }

  pureAck(clock: number): Uint8Array {
    return this.emit({ seq: this.next, ack: this.received, flags: "A" }, clock);
  }

  send(data: Uint8Array, clock: number, flags = "PA"): Uint8Array {
    const frame = this.emit({ seq: this.next, ack: this.received, flags, payload: data }, clock);
    this.next = seqAdd(this.next, data.length + (flags.includes("F") ? 1 : 0));
    return frame;
  }
}

test("end to end: request/response with different ISNs and timestamp bases releases every PVM frame by matching", () => {
  const comparator = new Comparator();
  const rewriter = new TcpRewriter();
  const pvm = new GuestTcp(0xfffff000, 900_000, "pvm"); // the PVM's stream wraps past 2^32
  const svm = new GuestTcp(0x12345678, 5_000, "svm");
  const released: Uint8Array[] = [];
  let now = 0;

  const fromClient = (spec: TcpSpec): void => {
    const frame = tcpFrame(toGuest(spec));
    pvm.receive(frame);
    const mirrored = rewriter.toSecondaryVm(frame);
    assert.deepEqual(checkChecksums(mirrored), { ipv4: true, transport: true });
    svm.receive(mirrored);
  };
  const fromPvm = (frame: Uint8Array): void => {
    const r = comparator.primary(frame, now);
    assert.equal(r.divergence, undefined, r.divergence?.detail);
    released.push(...r.release);
  };
  const fromSvm = (frame: Uint8Array): void => {
    const rewritten = rewriter.fromSecondaryVm(frame);
    assert.deepEqual(checkChecksums(rewritten), { ipv4: true, transport: true });
    const r = comparator.secondary(rewritten, now);
    assert.equal(r.divergence, undefined, r.divergence?.detail);
    released.push(...r.release);
  };
  const tick = (): void => {
    now += 5;
    assert.equal(comparator.expired(now), undefined);
  };

  // Handshake: the client connects to the guest's port 6379.
  const clientIsn = 0x7ffffff0;
  let clientTs = 42;
  fromClient({ seq: clientIsn, flags: "S", mss: 1460, ts: { val: clientTs, ecr: 0 } });
  fromPvm(pvm.synAck(1));
  tick();
  fromSvm(svm.synAck(1));
  assert.equal(released.length, 1, "the PVM's SYN-ACK leaves once the SVM's SYN-ACK arrived");
  clientTs++;
  fromClient({ seq: clientIsn + 1, ack: seqAdd(pvm.isn, 1), flags: "A", ts: { val: clientTs, ecr: 900_001 } });
  assert.equal(rewriter.stats().learned, 1);

  // Request: "GET" of a 4000-octet value.
  const request = new TextEncoder().encode("*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
  clientTs++;
  fromClient({ seq: clientIsn + 1, ack: seqAdd(pvm.isn, 1), flags: "PA", payload: request, ts: { val: clientTs, ecr: 900_001 } });
  const value = pattern(4000, 0, 5);

  // The PVM answers in 1448-octet segments; the SVM (later) in 1000 + 2500 + 500.
  fromPvm(pvm.send(value.subarray(0, 1448), 10));
  fromPvm(pvm.send(value.subarray(1448, 2896), 10));
  tick();
  fromSvm(svm.send(value.subarray(0, 1000), 11));
  fromPvm(pvm.send(value.subarray(2896, 4000), 12));
  tick();
  fromSvm(svm.send(value.subarray(1000, 3500), 12));
  tick();
  fromSvm(svm.send(value.subarray(3500, 4000), 13));
  assert.equal(released.length, 4);

  // The client acknowledges with SACK-free ACKs and closes; both VMs ack and close.
  clientTs++;
  const responseEnd = seqAdd(pvm.isn, 4001);
  fromClient({ seq: clientIsn + 1 + request.length, ack: responseEnd, flags: "A", ts: { val: clientTs, ecr: 900_012 } });
  clientTs++;
  fromClient({ seq: clientIsn + 1 + request.length, ack: responseEnd, flags: "FA", ts: { val: clientTs, ecr: 900_012 } });
  fromSvm(svm.send(new Uint8Array(0), 20, "FA"));
  tick();
  fromPvm(pvm.send(new Uint8Array(0), 21, "FA"));
  assert.equal(released.length, 5);
  clientTs++;
  fromClient({ seq: clientIsn + 2 + request.length, ack: seqAdd(responseEnd, 1), flags: "A", ts: { val: clientTs, ecr: 900_021 } });
  assert.equal(rewriter.stats().connections, 0, "both FINs acknowledged: the entry is gone");

  now += 10_000;
  assert.equal(comparator.expired(now), undefined);
  assert.deepEqual(released, pvm.frames);
  const s = comparator.stats();
  assert.equal(s.releasedMatched, pvm.frames.length);
  assert.equal(s.releasedUncompared, 0);
  assert.equal(s.heldFrames, 0);
  assert.equal(s.secondaryQueuedBytes, 0);
  assert.deepEqual(s.divergences, { payload: 0, length: 0, timeout: 0, overflow: 0, "secondary-extra": 0 });
  const rw = rewriter.stats();
  assert.equal(rw.rewrittenOut, svm.frames.length - 1); // all but the SVM's SYN-ACK
  assert.equal(rw.rewrittenIn, 5);
});

test("end to end: a checkpoint resets both sides; the connection continues with offset 0", () => {
  const comparator = new Comparator();
  const rewriter = new TcpRewriter();
  // A connection from before the checkpoint: the SVM now has the PVM's exact state.
  const pvm = new GuestTcp(1000, 100, "pvm");
  const svm = new GuestTcp(1000, 100, "svm");
  rewriter.reset();
  assert.deepEqual(comparator.checkpointed(), []);
  const released: Uint8Array[] = [];
  const a = pvm.send(pattern(300), 1);
  released.push(...comparator.primary(a, 0).release);
  const s = rewriter.fromSecondaryVm(svm.send(pattern(300), 1));
  released.push(...comparator.secondary(s, 0).release);
  assert.deepEqual(released, [a]);
  assert.equal(rewriter.stats().rewrittenOut, 0);
});
