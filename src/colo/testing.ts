/**
 * Helpers for tests of the replication sessions (tests only): a
 * SecondaryVm around an engine whose VM-level operations do nothing unless
 * a test gives them, the primary's DISK_INFO for an image, an in-memory
 * connection, a fake primary that writes the records in PrimaryReplicator's
 * order, and a secondary session over them.
 */
import { Duplex } from "node:stream";
import type { TestContext } from "node:test";
import { PAGE_SIZE, type BlockBackend, type Engine } from "../engine/engine.js";
import { FakeEngine } from "../engine/testing/fake-engine.js";
import { machineHeader, StreamReader, StreamWriter, unionSortedPfns, writableSink, writePages, type ReplicationModeName } from "../state/index.js";
import { sendMachine, writeEngineCompat } from "../state/machine-transfer.js";
import { BackChannel } from "./back-channel.js";
import { hashBackend } from "./disk/image-hash.js";
import { makeSpillDir, MemoryDisk } from "./disk/testing.js";
import type { Arbiter, LeaseAnswer } from "./lease.js";
import type { RewriterEntry } from "./net/tcp-rewriter.js";
import { PrimaryReplicator, type PrimaryOptions, type PrimaryVm } from "./primary.js";
import { SecondaryReplicator, type SecondaryDiskSlot, type SecondaryVm } from "./secondary.js";

/** A SecondaryVm over `engine` and `disks`; pause, resume, takeOver... do nothing unless `overrides` gives them. */
export function fakeSecondaryVm(engine: Engine, disks: readonly SecondaryDiskSlot[], overrides: Partial<Omit<SecondaryVm, "engine" | "disks">> = {}): SecondaryVm {
  const noop = async (): Promise<void> => undefined;
  return {
    engine,
    disks,
    pause: noop,
    resume: noop,
    setOutputFilter: () => undefined,
    setInputFilter: () => undefined,
    setLinkTranslation: () => undefined,
    deliverInput: () => undefined,
    sendOutput: () => undefined,
    takeOver: noop,
    discard: noop,
    end: noop,
    ...overrides,
  };
}

/** The primary's DISK_INFO for `image` as disk `disk` (its chunk hashes, as DiskForwarder sends them). */
export async function writeDiskInfoOf(writer: StreamWriter, disk: number, image: BlockBackend): Promise<void> {
  const hashes = await hashBackend(image);
  await writer.writeDiskInfo({ disk, chunkSize: hashes.chunkBytes, size: image.byteLength, chunkHashes: hashes.chunks.map((h) => Uint8Array.from(Buffer.from(h, "hex"))) });
}

/** An arbiter that grants every request while `reachable`, and cannot be reached otherwise. */
export class FakeArbiter implements Arbiter {
  reachable = true;

  acquire(_vm: string, holder: string, ttlMs: number, solo: boolean): Promise<LeaseAnswer> {
    if (!this.reachable) return Promise.reject(new Error("arbiter unreachable"));
    return Promise.resolve({ granted: true, solo, holder, remainingMs: ttlMs });
  }

  release(): Promise<void> {
    return Promise.resolve();
  }

  close(): void {}
}

/** Pages of the fake engines' RAM. */
export const FAKE_PAGES = 8;
const KiB = 1024;

/**
 * Two ends of an in-memory connection: what one end writes, the other
 * reads. Ending or destroying one end ends the other's reading, as a
 * closed TCP connection does.
 */
export function connection(): { primary: Duplex; secondary: Duplex } {
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

/** A FakeEngine of FAKE_PAGES pages. */
export function fakeEngine(): FakeEngine {
  return new FakeEngine({ memoryBytes: FAKE_PAGES * PAGE_SIZE, kernel: new Uint8Array(0), cmdline: "", disks: [] });
}

/** Page `pfn` of `ram`. */
export function page(ram: Uint8Array, pfn: number): Uint8Array {
  return ram.subarray(pfn * PAGE_SIZE, (pfn + 1) * PAGE_SIZE);
}

/** The primary's side of the session, record for record as PrimaryReplicator writes it (one disk, no writes to it). */
export class FakePrimary {
  /** The PVM: the pages sent are its RAM. */
  readonly engine = fakeEngine();
  private readonly writer: StreamWriter;
  private readonly back: BackChannel;
  /** The last DISK_WRITE's seq: what the next checkpoint covers. */
  private diskSeq = 0;

  constructor(readonly socket: Duplex) {
    this.writer = new StreamWriter(writableSink(socket), { machine: machineHeader(this.engine.id, this.engine.memoryBytes) });
    this.back = new BackChannel(socket, () => undefined, () => undefined);
  }

  /** ENGINE_COMPAT, REPLICATION_MODE (none: `undefined`), DISK_INFO (and its DISK_WANT), checkpoint 0 up to CHECKPOINT_END. */
  async start(mode: ReplicationModeName | undefined, image: MemoryDisk, linkLayers?: readonly (readonly RewriterEntry[])[]): Promise<void> {
    await this.engine.start({ paused: true });
    for (let pfn = 0; pfn < FAKE_PAGES; pfn++) page(this.engine.ram(), pfn).fill(0xa0 + pfn);
    await writeEngineCompat(this.engine, this.writer);
    if (mode !== undefined) await this.writer.writeReplicationMode({ mode, disks: true });
    if (linkLayers !== undefined) await this.writer.writeLinkTranslation(linkLayers);
    await writeDiskInfoOf(this.writer, 0, image);
    const want = await this.back.next();
    if (want.kind !== "disk-want") throw new Error(`expected DISK_WANT from the secondary, got ${want.kind}`);
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
    return Array.from(await this.back.svmDirtyList());
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

  /** The disk records (covering every write sent) and CHECKPOINT_END; then the secondary's SVM_READY and SVM_RESUMED. */
  async end(): Promise<void> {
    await this.writer.writeDiskCheckpoint({ disk: 0, uptoSeq: this.diskSeq });
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

  /** A forwarded PVM write to disk 0 (DISK_WRITE). */
  async diskWrite(seq: number, offset: number, data: Uint8Array): Promise<void> {
    await this.writer.writeDiskWrite({ disk: 0, seq, offset, data });
    this.diskSeq = seq;
  }

  /** The primary is gone: its end of the connection closes. */
  vanish(): void {
    this.socket.destroy();
  }
}

export interface SecondarySession {
  svm: FakeEngine;
  /** The secondary's own image of disk 0. */
  image: MemoryDisk;
  primary: FakePrimary;
  secondary: SecondaryReplicator;
  /** Resolves with the reason once the session is over (taken over, or discarded with `discardable`). */
  run: Promise<string>;
  /** For each vm.takeOver() call: how many loadState() calls the SVM's engine had had by then. */
  takeOvers: number[];
  /** The reason of each vm.discard() call (only with `discardable`). */
  discards: string[];
  logs: string[];
}

/**
 * A secondary holding checkpoint 0, in its run() (SVM_READY received);
 * with `arbiter` (lease ttl `leaseMs`, default 60 s) or none. Its
 * vm.discard() rejects ("no takeover") unless `discardable`, which records
 * it instead; `vm` overrides other VM operations.
 */
export async function secondarySession(
  t: TestContext,
  mode: ReplicationModeName | undefined,
  opts: { discardable?: boolean; arbiter?: Arbiter; leaseMs?: number; linkLayers?: readonly (readonly RewriterEntry[])[]; vm?: Partial<Omit<SecondaryVm, "engine" | "disks" | "takeOver" | "discard">> } = {},
): Promise<SecondarySession> {
  const spill = makeSpillDir();
  t.after(() => spill.remove());
  const svm = fakeEngine();
  await svm.start({ paused: true }); // as the daemon starts it before the secondary reads on
  const takeOvers: number[] = [];
  const discards: string[] = [];
  const logs: string[] = [];
  const image = new MemoryDisk(64 * KiB);
  const vm = fakeSecondaryVm(svm, [{ index: 0, raw: image, spillDir: spill.dir, interpose: () => undefined }], {
    takeOver: async () => {
      takeOvers.push(svm.loads.length);
      await Promise.resolve();
    },
    discard: async (reason) => {
      if (opts.discardable !== true) throw new Error("the copy was discarded: no takeover");
      discards.push(reason);
      await Promise.resolve();
    },
    ...opts.vm,
  });
  const link = connection();
  const primary = new FakePrimary(link.primary);
  const secondary = new SecondaryReplicator(vm, link.secondary, new StreamReader(link.secondary), "primary", {
    timeoutMs: 30_000,
    heartbeatMs: 50,
    log: (msg) => logs.push(msg),
    ...(opts.arbiter ? { arbiter: { arbiter: opts.arbiter, vm: "guest", holder: "h2:1", ttlMs: opts.leaseMs ?? 60_000 } } : {}),
  });
  t.after(async () => {
    link.primary.destroy();
    link.secondary.destroy();
    await secondary.releaseLease();
  });
  await Promise.all([secondary.receiveInitial(), primary.start(mode, new MemoryDisk(64 * KiB), opts.linkLayers)]);
  if (secondary.mode !== (mode ?? "remus")) throw new Error(`the secondary runs in ${secondary.mode} mode, not ${mode ?? "remus"}`);
  const run = secondary.run();
  await primary.ready();
  return { svm, image, primary, secondary, run, takeOvers, discards, logs };
}

/** `p`, or a rejection after `ms` saying what did not happen. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** A primary replicating to a real secondary over an in-memory connection, past checkpoint 0 (replicationPair()). */
export interface ReplicationPair {
  pvm: FakeEngine;
  svm: FakeEngine;
  primary: PrimaryReplicator;
  secondary: SecondaryReplicator;
  /** The secondary's run(): resolves once it took over, stepped down or discarded its copy. */
  run: Promise<string>;
  /** How many times the secondary's VM took over. */
  readonly takeOvers: number;
  /** The reason of each discard of the secondary's copy. */
  discards: string[];
  /** Every link translation the secondary's VM was given, in order. */
  links: Array<Parameters<SecondaryVm["setLinkTranslation"]>[0]>;
  /** The primary's log messages. */
  logs: string[];
  /** Both ends of the connection (destroy the primary's: its host died). */
  link: { primary: Duplex; secondary: Duplex };
}

/**
 * A Remus-mode primary (unless `primary` says otherwise; checkpoints only
 * when the test asks) replicating to a real SecondaryReplicator, both over
 * fake engines without disks, through VM_CONFIG and checkpoint 0, the
 * secondary's run() started. `vm` overrides the primary's VM operations
 * (given the PVM's engine).
 */
export async function replicationPair(
  t: TestContext,
  opts: { primary?: Partial<PrimaryOptions>; vm?: (pvm: FakeEngine) => Partial<PrimaryVm>; secondaryVm?: Partial<Omit<SecondaryVm, "engine" | "disks">> } = {},
): Promise<ReplicationPair> {
  const pvm = fakeEngine();
  await pvm.start();
  const logs: string[] = [];
  const vm: PrimaryVm = {
    engine: pvm,
    pause: () => pvm.pause(),
    resume: () => pvm.resume(),
    setOutputFilter: () => undefined,
    setInputFilter: () => undefined,
    sendOutput: () => undefined,
    disks: [],
    end: () => Promise.resolve(),
    ...opts.vm?.(pvm),
  };
  const link = connection();
  const primary = new PrimaryReplicator(vm, link.primary, "secondary", {
    mode: "remus",
    intervalMs: 60_000, // only the test's checkpoints
    timeoutMs: 30_000,
    heartbeatMs: 50,
    log: (m) => logs.push(m),
    ...opts.primary,
  });
  const svm = fakeEngine();
  await svm.start({ paused: true });
  let takeOvers = 0;
  const discards: string[] = [];
  const links: ReplicationPair["links"] = [];
  const secondaryVm = fakeSecondaryVm(svm, [], {
    setLinkTranslation: (tr) => links.push(tr),
    takeOver: () => {
      takeOvers++;
      return Promise.resolve();
    },
    discard: (reason) => {
      discards.push(reason);
      return Promise.resolve();
    },
    ...opts.secondaryVm,
  });
  const reader = new StreamReader(link.secondary);
  const secondary = new SecondaryReplicator(secondaryVm, link.secondary, reader, "primary", { timeoutMs: 30_000, heartbeatMs: 50, log: () => undefined });
  t.after(async () => {
    link.secondary.destroy();
    link.primary.destroy();
    await primary.releaseLease();
  });
  const started = primary.start({ path: "/etc/colo/guest.cfg", text: 'name = "guest"\n' });
  const config = await reader.next(); // the daemon reads VM_CONFIG before it builds the secondary
  if (config?.kind !== "vm-config") throw new Error(`expected VM_CONFIG first, got ${config?.kind ?? "the end"}`);
  await secondary.receiveInitial();
  const run = secondary.run();
  await started;
  return {
    pvm,
    svm,
    primary,
    secondary,
    run,
    get takeOvers() {
      return takeOvers;
    },
    discards,
    links,
    logs,
    link,
  };
}
