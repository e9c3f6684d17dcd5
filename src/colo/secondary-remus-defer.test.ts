/**
 * A Remus secondary loads the device state once, at a takeover, not at
 * every checkpoint: its SVM does not run until then. Each complete
 * checkpoint's pages go into RAM at once (and to the dirty tracker's copy,
 * pagesCopied), its engine state is kept; a takeover loads the last
 * complete checkpoint's state with every page applied since the engine
 * last loaded one, before the VM takes over. A checkpoint cut short is
 * discarded whole. Compare mode still loads at every checkpoint (its SVM
 * runs from each one). Driven through the real SecondaryReplicator with a
 * fake engine, over an in-memory connection to a fake primary that writes
 * the records in PrimaryReplicator's order; no VM.
 */
import assert from "node:assert/strict";
import { Duplex } from "node:stream";
import { test, type TestContext } from "node:test";
import { PAGE_SIZE } from "../engine/engine.js";
import { FakeEngine } from "../engine/testing/fake-engine.js";
import { machineHeader, StreamReader, StreamWriter, unionSortedPfns, writableSink, writePages, type ReplicationModeName } from "../state/index.js";
import { sendMachine, writeEngineCompat } from "../state/machine-transfer.js";
import { BackChannel } from "./back-channel.js";
import { makeSpillDir, MemoryDisk } from "./disk/testing.js";
import { SecondaryReplicator } from "./secondary.js";
import { fakeSecondaryVm, writeDiskInfoOf } from "./testing.js";

const PAGES = 8;
const KiB = 1024;
/** A page the SVM's dirty tracker names when asked (marked before a checkpoint). */
const SVM_DIRTY_PFN = 5;

/**
 * Two ends of an in-memory connection: what one end writes, the other
 * reads. Ending or destroying one end ends the other's reading, as a
 * closed TCP connection does.
 */
function connection(): { primary: Duplex; secondary: Duplex } {
  const ends: Duplex[] = [];
  const eof = [false, false];
  const peer = (i: number): { end: Duplex; index: number } => {
    const index = 1 - i;
    const end = ends[index];
    if (end === undefined) throw new Error("internal: connection end missing");
    return { end, index };
  };
  const close = (i: number): void => {
    const p = peer(i);
    if (eof[p.index] || p.end.destroyed) return;
    eof[p.index] = true;
    p.end.push(null);
  };
  const make = (i: number): Duplex =>
    new Duplex({
      read() {},
      write(chunk: Buffer, _encoding, done) {
        const p = peer(i);
        if (!eof[p.index] && !p.end.destroyed) p.end.push(chunk);
        done();
      },
      final(done) {
        close(i);
        done();
      },
      destroy(err, done) {
        close(i);
        done(err);
      },
    });
  ends.push(make(0), make(1));
  const [primary, secondary] = ends;
  if (primary === undefined || secondary === undefined) throw new Error("internal: connection ends missing");
  return { primary, secondary };
}

function fakeEngine(): FakeEngine {
  return new FakeEngine({ memoryBytes: PAGES * PAGE_SIZE, kernel: new Uint8Array(0), cmdline: "", disks: [] });
}

function page(ram: Uint8Array, pfn: number): Uint8Array {
  return ram.subarray(pfn * PAGE_SIZE, (pfn + 1) * PAGE_SIZE);
}

/** `pfns` in ascending order (the secondary keeps a takeover's pages as a set: their order is not part of the contract). */
function ascending(pfns: readonly number[] | undefined): number[] | undefined {
  return pfns === undefined ? undefined : [...pfns].sort((a, b) => a - b);
}

/** The bytes of a state blob, for messages and comparisons. */
function blob(text: string): Uint8Array {
  return Uint8Array.from(Buffer.from(text));
}

/** The primary's side of the session, record for record as PrimaryReplicator writes it (one disk, no writes to it). */
class FakePrimary {
  /** The PVM: the pages sent are its RAM. */
  readonly engine = fakeEngine();
  private readonly writer: StreamWriter;
  private readonly back: BackChannel;

  constructor(readonly socket: Duplex) {
    this.writer = new StreamWriter(writableSink(socket), { machine: machineHeader(this.engine.id, this.engine.memoryBytes) });
    this.back = new BackChannel(socket, () => undefined, () => undefined);
  }

  /** ENGINE_COMPAT, REPLICATION_MODE (none: `undefined`), DISK_INFO (and its DISK_WANT), checkpoint 0 up to CHECKPOINT_END. */
  async start(mode: ReplicationModeName | undefined, image: MemoryDisk): Promise<void> {
    await this.engine.start({ paused: true });
    for (let pfn = 0; pfn < PAGES; pfn++) page(this.engine.ram(), pfn).fill(0xa0 + pfn);
    await writeEngineCompat(this.engine, this.writer);
    if (mode !== undefined) await this.writer.writeReplicationMode({ mode, disks: true });
    await writeDiskInfoOf(this.writer, 0, image);
    const want = await this.back.next();
    assert.equal(want.kind, "disk-want");
    await sendMachine(this.engine, this.writer, { live: true, close: "checkpoint", pause: () => Promise.resolve() });
    await this.writer.writeDiskCheckpoint({ disk: 0, uptoSeq: 0 });
    await this.writer.writeCheckpointEnd();
  }

  /** The secondary's SVM_READY for checkpoint 0 (written when its run() starts). */
  async ready(): Promise<void> {
    await this.back.expectState("SVM_READY");
  }

  /** NEW, then the secondary's SVM_SUSPENDED and the SVM's dirty list, which is returned. */
  async begin(): Promise<number[]> {
    await this.writer.writeCheckpointState("NEW");
    await this.back.expectState("SVM_SUSPENDED");
    let svmDirty: Uint32Array = new Uint32Array(0);
    for (;;) {
      const r = await this.back.next();
      if (r.kind === "memory-stream") continue;
      if (r.kind === "dirty-pfn-list") svmDirty = unionSortedPfns(svmDirty, r.pfns);
      else if (r.kind === "checkpoint") break;
      else throw new Error(`unexpected ${r.kind} in the secondary's dirty list`);
    }
    return Array.from(svmDirty);
  }

  /** MEMORY_STREAM and the PVM's pages `pfns` (ascending), each first filled with `fill`. */
  async pages(pfns: readonly number[], fill: number): Promise<void> {
    for (const pfn of pfns) page(this.engine.ram(), pfn).fill(fill);
    await this.writer.writeMemoryStream();
    await writePages(this.writer, () => this.engine.ram(), pfns, (copied) => this.engine.pagesCopied(copied));
  }

  /** The engine state and CHECKPOINT (the memory part's close). */
  async state(state: Uint8Array): Promise<void> {
    await this.writer.writeEngineState({ engineId: this.engine.id, formatVersion: this.engine.stateFormatVersion, blob: state });
    await this.writer.writeCheckpoint();
  }

  /** The disk records and CHECKPOINT_END; then the secondary's SVM_READY and SVM_RESUMED. */
  async end(): Promise<void> {
    await this.writer.writeDiskCheckpoint({ disk: 0, uptoSeq: 0 });
    await this.writer.writeCheckpointEnd();
    await this.back.expectState("SVM_READY");
    await this.back.expectState("SVM_RESUMED");
  }

  /** A whole checkpoint: the PVM's pages `pvmPfns` (filled with `fill`) and those the SVM names, then `state`. Returns the SVM's dirty list. */
  async checkpoint(pvmPfns: readonly number[], fill: number, state: Uint8Array): Promise<number[]> {
    const svmDirty = await this.begin();
    await this.pages(Array.from(unionSortedPfns(Uint32Array.from(pvmPfns), Uint32Array.from(svmDirty))), fill);
    await this.state(state);
    await this.end();
    return svmDirty;
  }

  /** The primary is gone: its end of the connection closes. */
  vanish(): void {
    this.socket.destroy();
  }
}

interface Session {
  svm: FakeEngine;
  primary: FakePrimary;
  secondary: SecondaryReplicator;
  /** Resolves with the reason once the secondary has taken over. */
  run: Promise<string>;
  /** For each vm.takeOver() call: how many loadState() calls the SVM's engine had had by then. */
  takeOvers: number[];
  logs: string[];
}

/** A secondary holding checkpoint 0, in its run() (SVM_READY received); no arbiter. */
async function session(t: TestContext, mode: ReplicationModeName | undefined): Promise<Session> {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const svm = fakeEngine();
  await svm.start({ paused: true }); // as the daemon starts it before the secondary reads on
  const takeOvers: number[] = [];
  const logs: string[] = [];
  const vm = fakeSecondaryVm(svm, [{ index: 0, raw: new MemoryDisk(64 * KiB), spillDir: spill.dir, interpose: () => undefined }], {
    takeOver: async () => {
      takeOvers.push(svm.loads.length);
      await Promise.resolve();
    },
    discard: () => Promise.reject(new Error("the copy was discarded: no takeover")),
  });
  const link = connection();
  const primary = new FakePrimary(link.primary);
  const secondary = new SecondaryReplicator(vm, link.secondary, new StreamReader(link.secondary), "primary", {
    timeoutMs: 30_000,
    heartbeatMs: 50,
    log: (msg) => logs.push(msg),
  });
  t.after(() => {
    link.primary.destroy();
    link.secondary.destroy();
  });
  await Promise.all([secondary.receiveInitial(), primary.start(mode, new MemoryDisk(64 * KiB))]);
  assert.equal(secondary.mode, mode ?? "remus");
  const run = secondary.run();
  await primary.ready();
  return { svm, primary, secondary, run, takeOvers, logs };
}

/** Checkpoint 0's load: the whole machine (no changedPages), FakeEngine.saveState()'s one-octet blob. */
const CHECKPOINT0_LOAD = { state: new Uint8Array(1), changedPages: undefined };

for (const mode of ["remus", undefined] as const) {
  test(`secondary (${mode === undefined ? "no REPLICATION_MODE: Remus by default" : "remus"}): a complete checkpoint writes its pages into RAM and the tracker's copy, loads no state, and sends an empty SVM dirty list`, async (t) => {
    const s = await session(t, mode);
    assert.deepEqual(s.svm.loads, [CHECKPOINT0_LOAD], "checkpoint 0 was loaded whole");
    const takes = s.svm.dirtyTakes;
    // The tracker would name a page if asked: a Remus secondary does not ask (its SVM has not run).
    s.svm.markDirty(SVM_DIRTY_PFN);

    const svmDirty = await s.primary.checkpoint([1, 3], 0x11, blob("state 1"));

    assert.deepEqual(svmDirty, [], "the SVM's dirty list at NEW is empty");
    assert.equal(s.svm.dirtyTakes, takes, "no takeDirtyPages() during the checkpoint");
    assert.deepEqual(s.svm.loads, [CHECKPOINT0_LOAD], "no loadState() at the checkpoint");
    for (const pfn of [1, 3]) assert.deepEqual(page(s.svm.ram(), pfn), page(s.primary.engine.ram(), pfn), `page ${pfn} is in the SVM's RAM`);
    assert.deepEqual(page(s.svm.ram(), 2), new Uint8Array(PAGE_SIZE).fill(0xa2), "a page the checkpoint did not carry keeps checkpoint 0's bytes");
    assert.deepEqual(s.svm.copied, [[1, 3]], "pagesCopied() got the checkpoint's pages");
    assert.equal(s.secondary.applied, 2, "checkpoint 1 applied");

    s.primary.vanish();
    await s.run;
  });
}

test("secondary (remus): after two checkpoints, a takeover loads the second one's state once, with both checkpoints' pages, before the VM takes over", async (t) => {
  const s = await session(t, "remus");
  await s.primary.checkpoint([1, 3], 0x11, blob("state 1"));
  await s.primary.checkpoint([3, 6], 0x22, blob("state 2"));
  assert.deepEqual(s.svm.loads, [CHECKPOINT0_LOAD], "no loadState() at either checkpoint");
  assert.deepEqual(s.svm.copied, [[1, 3], [3, 6]]);
  assert.deepEqual(s.takeOvers, [], "no takeover while the primary is there");

  s.primary.vanish();
  const reason = await s.run;

  assert.match(reason, /ended/, "the secondary saw the primary's end of the stream");
  assert.equal(s.svm.loads.length, 2, "one loadState() at the takeover");
  const load = s.svm.loads[1];
  assert.deepEqual(load?.state, blob("state 2"), "the last checkpoint's state");
  assert.deepEqual(ascending(load?.changedPages), [1, 3, 6], "every page applied since checkpoint 0's load, each once");
  assert.deepEqual(s.takeOvers, [2], "the VM took over once, after the load");
  assert.deepEqual(page(s.svm.ram(), 1), new Uint8Array(PAGE_SIZE).fill(0x11));
  assert.deepEqual(page(s.svm.ram(), 3), new Uint8Array(PAGE_SIZE).fill(0x22));
  assert.deepEqual(page(s.svm.ram(), 6), new Uint8Array(PAGE_SIZE).fill(0x22));
  assert.ok(s.logs.includes("loaded the last checkpoint's device state for the takeover"), s.logs.join("; "));
});

/** Where the primary goes away inside checkpoint 2, after its NEW. */
const CUTS = {
  "after some of its pages": async (p: FakePrimary) => {
    await p.pages([3, 6], 0x33);
  },
  "after its CHECKPOINT, before the disk records and CHECKPOINT_END": async (p: FakePrimary) => {
    await p.pages([3, 6], 0x33);
    await p.state(blob("state 2 (cut)"));
  },
} as const;

for (const [where, cut] of Object.entries(CUTS)) {
  test(`secondary (remus): a checkpoint cut ${where} is discarded; the takeover loads the last complete one`, async (t) => {
    const s = await session(t, "remus");
    await s.primary.checkpoint([1, 3], 0x11, blob("state 1"));
    assert.deepEqual(s.svm.loads, [CHECKPOINT0_LOAD], "checkpoint 1's state is kept, not loaded");
    const svmDirty = await s.primary.begin();
    assert.deepEqual(svmDirty, []);
    await cut(s.primary);
    s.primary.vanish();
    assert.match(await s.run, /ended/, "the secondary saw the primary's end of the stream");

    assert.equal(s.secondary.stats.discardedCheckpoints, 1, "the cut checkpoint counts as discarded");
    assert.equal(s.secondary.applied, 2, "checkpoint 2 was not applied");
    assert.equal(s.svm.loads.length, 2, "one loadState() at the takeover");
    const load = s.svm.loads[1];
    assert.deepEqual(load?.state, blob("state 1"), "checkpoint 1's state, the last complete one");
    assert.deepEqual(ascending(load?.changedPages), [1, 3], "checkpoint 1's pages only");
    assert.deepEqual(s.takeOvers, [2], "the VM took over after the load");
    assert.deepEqual(page(s.svm.ram(), 3), new Uint8Array(PAGE_SIZE).fill(0x11), "page 3 holds checkpoint 1's bytes, not the cut checkpoint's");
    assert.deepEqual(page(s.svm.ram(), 6), new Uint8Array(PAGE_SIZE).fill(0xa6), "page 6 holds checkpoint 0's bytes, not the cut checkpoint's");
    assert.deepEqual(s.svm.copied, [[1, 3]], "the cut checkpoint's pages never reached the tracker's copy");
  });
}

test("secondary (compare): every checkpoint loads its state with its pages, the SVM's dirty list included; the takeover loads nothing more", async (t) => {
  const s = await session(t, "compare");
  s.svm.markDirty(SVM_DIRTY_PFN); // the running SVM wrote it
  const svmDirty = await s.primary.checkpoint([1, 3], 0x11, blob("state 1"));
  assert.deepEqual(svmDirty, [SVM_DIRTY_PFN], "the SVM's dirty list names what it wrote");
  assert.deepEqual(s.svm.loads, [CHECKPOINT0_LOAD, { state: blob("state 1"), changedPages: [1, 3, SVM_DIRTY_PFN] }], "checkpoint 1 loaded");

  await s.primary.checkpoint([2, 6], 0x22, blob("state 2"));
  assert.deepEqual(s.svm.loads.slice(2), [{ state: blob("state 2"), changedPages: [2, 6] }], "checkpoint 2 loaded");
  assert.deepEqual(page(s.svm.ram(), SVM_DIRTY_PFN), new Uint8Array(PAGE_SIZE).fill(0x11), "the SVM's page was overwritten with the PVM's");

  s.primary.vanish();
  await s.run;
  assert.equal(s.svm.loads.length, 3, "no loadState() at the takeover");
  assert.deepEqual(s.takeOvers, [3]);
});
