/**
 * Moving a whole machine through a stream: the sending side of a save file
 * and of a live migration with pre-copy rounds (docs/specs/stream.md §6.2),
 * and the receiving side that fills a paused engine. Works on the Engine
 * interface and a StreamWriter/StreamReader: it knows neither files nor
 * sockets, nor which VM layer drives the engine.
 */
import type { Engine, EngineId } from "../engine/engine.js";
import { PAGE_SIZE } from "../engine/engine.js";
import type { EngineCompat } from "./engine-compat-record.js";
import type { TranslationEntry } from "./link-translation-record.js";
import { StreamError, type StreamLocation } from "./errors.js";
import { memoryImageHeaderLayout, type MachineHeader } from "./memory-header.js";
import { applyPageData } from "./page-data.js";
import { PAGE_TYPE } from "./pfn-entry.js";
import type { StreamReader } from "./reader.js";
import { describeRecord, TOOLSTACK_RECORD } from "./record-types.js";
import { allPfns, writePages } from "./write-pages.js";
import type { StreamWriter } from "./writer.js";
import { elapsedMs, monotonicMs } from "../sys/clock.js";

/** Pre-copy stops when a round leaves at most this many dirty pages (1 MiB): the rest goes paused. */
export const DEFAULT_FINAL_ROUND_PAGES = 256;
/** ... or after this many rounds (Xen's default max_iters is 5; the guest here dirties slowly). */
export const DEFAULT_MAX_ROUNDS = 30;

export interface TransferProgress {
  round: number;
  final: boolean;
  /** Pages sent in this round (NORMAL + ZERO). */
  pages: number;
  zeroPages: number;
  /** Octets on the wire for this round. */
  bytes: number;
  /** Wire throughput of this round. */
  mbPerSec: number;
  /** Guest pages per second in this round. */
  pagesPerSec: number;
  elapsedMs: number;
}

export interface SendOptions {
  /** Live: pre-copy rounds with the guest running, then `pause()` for the last round. Not live: the engine is already paused (save). */
  live: boolean;
  /** Pauses the guest for the final round (the VM layer's pause, so its state stays true). */
  pause: () => Promise<void>;
  finalRoundPages?: number;
  maxRounds?: number;
  onProgress?: (p: TransferProgress) => void;
  /** How the memory part closes: END (save, migration; default) or CHECKPOINT (COLO/Remus initial sync). */
  close?: "end" | "checkpoint";
}

export interface SendResult {
  rounds: number;
  pages: number;
  zeroPages: number;
  bytes: number;
  totalMs: number;
  /** When the guest was paused for the final round (the host's monotonic clock, src/sys/clock.ts), for downtime figures. */
  pausedAt: number;
  /** The final round: dirty pages sent while paused, plus the engine state. */
  finalPages: number;
  stateBytes: number;
}

/**
 * ENGINE_COMPAT (docs/specs/stream.md §3.14) for `engine`: written by every
 * source at the start of its stream (right after VM_CONFIG, before any disk
 * or memory record) so that the receiver refuses an incompatible engine
 * before it takes a page. The engine must be started (qemu learns its
 * version from the process).
 */
export async function writeEngineCompat(engine: Engine, writer: StreamWriter): Promise<void> {
  const descriptor = engine.compatibility;
  if (descriptor === undefined) {
    throw new StreamError("INTERNAL", undefined, `the ${engine.id} engine does not know its compatibility yet (not started): ENGINE_COMPAT cannot be written`);
  }
  await writer.writeEngineCompat({ engineId: engine.id, descriptor });
}

/** The engine a receiver has (or would start): its id and its Engine.compatibility. */
export interface EngineIdentity {
  engineId: EngineId;
  descriptor: string;
}

/**
 * Why a source's ENGINE_COMPAT cannot load on `mine` (undefined: it can),
 * in the words a receiver refuses it with. Pure: `colo check` asks it of
 * the engine a secondary host would start, before any stream.
 */
export function engineCompatMismatch(source: EngineIdentity, mine: EngineIdentity): string | undefined {
  if (source.engineId !== mine.engineId) {
    return `the source runs engine ${source.engineId} (${source.descriptor}), this host engine ${mine.engineId} (${mine.descriptor}): the state of one engine cannot be loaded by the other`;
  }
  if (source.descriptor !== mine.descriptor) return `the source runs ${source.descriptor}, this host ${mine.descriptor}: a device state from one cannot be loaded by the other`;
  return undefined;
}

/**
 * The receiver's check of an ENGINE_COMPAT (spec §3.14) against its own
 * engine, which must be started: throws StreamError MISMATCH naming the
 * record, its offset and both sides when the source's engine state cannot
 * load here. Call it when the record arrives, before any page or disk chunk.
 */
export function checkEngineCompat(engine: Engine, compat: EngineCompat, offset: number): void {
  const where: StreamLocation = { offset, what: describeRecord("toolstack", TOOLSTACK_RECORD.ENGINE_COMPAT) };
  const mine = engine.compatibility;
  if (mine === undefined) {
    throw new StreamError("INTERNAL", where, `this host's ${engine.id} engine is not started: its compatibility is not known yet, the source's cannot be checked`);
  }
  const mismatch = engineCompatMismatch(compat, { engineId: engine.id, descriptor: mine });
  if (mismatch !== undefined) throw new StreamError("MISMATCH", where, mismatch);
}

/**
 * Why a machine of the source's engine and memory cannot be received by
 * one of `mine` (undefined: it can), as checkMachine() refuses it. Pure.
 */
export function machineMismatch(source: { engineId: EngineId; memoryBytes: number }, mine: { engineId: EngineId; memoryBytes: number }): string | undefined {
  if (source.engineId !== mine.engineId) return `the source runs engine ${source.engineId}, this VM engine ${mine.engineId}: the state of one engine cannot be loaded by the other`;
  if (source.memoryBytes !== mine.memoryBytes) return `the stream's machine has ${source.memoryBytes / 2 ** 20} MiB of memory, this VM ${mine.memoryBytes / 2 ** 20} MiB`;
  return undefined;
}

/**
 * The receiver's check of the machine header against its own engine: the
 * engine (emu, qemu) and the memory size must be the same. Throws
 * StreamError MISMATCH at the machine header.
 */
export function checkMachine(engine: Engine, machine: MachineHeader, headersOffset: number): void {
  const where: StreamLocation = { offset: headersOffset + memoryImageHeaderLayout.size, what: "machine header" };
  const mismatch = machineMismatch(machine, { engineId: engine.id, memoryBytes: engine.memoryBytes });
  if (mismatch !== undefined) throw new StreamError("MISMATCH", where, mismatch);
}

/**
 * Writes the memory part of an image stream: MEMORY_STREAM, the pages (all
 * of them, then -- when live -- the pages dirtied meanwhile, round after
 * round), the engine state, and the memory END. The caller writes the
 * toolstack records around it (VM_CONFIG before, END after).
 */
export async function sendMachine(engine: Engine, writer: StreamWriter, opts: SendOptions): Promise<SendResult> {
  const started = monotonicMs();
  const finalRoundPages = opts.finalRoundPages ?? DEFAULT_FINAL_ROUND_PAGES;
  const maxRounds = opts.maxRounds ?? DEFAULT_MAX_ROUNDS;
  const result: SendResult = { rounds: 0, pages: 0, zeroPages: 0, bytes: 0, totalMs: 0, pausedAt: 0, finalPages: 0, stateBytes: 0 };
  await writer.writeMemoryStream();

  // Round 0 sends every page, and each batch's pagesCopied() restarts the
  // dirty log for its pages: a page the guest writes after its batch was
  // copied goes again in the next round. No takeDirtyPages() first: on a
  // shadow tracker that compares and copies every page that changed since
  // boot in one turn of the event loop (measured: 410 ms for 15 817 pages of
  // a 160 MiB emu guest, heartbeats and lease renewals waiting behind it),
  // for nothing round 0 does not do anyway.
  let pfns: Iterable<number> = allPfns(engine.pageCount);
  let count = engine.pageCount;
  let previous = Number.POSITIVE_INFINITY;
  let final = !opts.live;
  if (final) result.pausedAt = started;
  for (let round = 0; ; round++) {
    const roundStart = monotonicMs();
    await writer.writePrecopyRound({ round, final, pageCount: count });
    const stats = await writePages(writer, () => engine.ram(), pfns, (copied, sent) => engine.pagesCopied(copied, sent));
    const ms = Math.max(1, monotonicMs() - roundStart);
    result.rounds = round + 1;
    result.pages += stats.pages;
    result.zeroPages += stats.zeroPages;
    if (final) result.finalPages = stats.pages;
    opts.onProgress?.({
      round,
      final,
      pages: stats.pages,
      zeroPages: stats.zeroPages,
      bytes: stats.bytes,
      mbPerSec: stats.bytes / 2 ** 20 / (ms / 1000),
      pagesPerSec: stats.pages / (ms / 1000),
      elapsedMs: elapsedMs(started),
    });
    if (final) break;
    const dirty = engine.takeDirtyPages();
    // Stop when the rest is small, when rounds stop shrinking, or at the round limit.
    if (dirty.length <= finalRoundPages || dirty.length >= previous || round + 1 >= maxRounds) {
      await opts.pause();
      result.pausedAt = monotonicMs();
      final = true;
      const merged = mergeSorted(dirty, engine.takeDirtyPages());
      pfns = merged;
      count = merged.length;
    } else {
      pfns = dirty;
      count = dirty.length;
    }
    previous = dirty.length;
  }
  const blob = await engine.saveState();
  result.stateBytes = blob.length;
  await writer.writeEngineState({ engineId: engine.id, formatVersion: engine.stateFormatVersion, blob });
  if (opts.close === "checkpoint") await writer.writeCheckpoint();
  else await writer.writeMemoryEnd();
  result.bytes = writer.bytesWritten;
  result.totalMs = elapsedMs(started);
  return result;
}

/** Union of two ascending pfn lists, ascending, without repeats. */
function mergeSorted(a: Uint32Array, b: Uint32Array): Uint32Array {
  const out = new Uint32Array(a.length + b.length);
  let i = 0;
  let j = 0;
  let n = 0;
  while (i < a.length || j < b.length) {
    const x = i < a.length ? (a[i] as number) : Number.POSITIVE_INFINITY;
    const y = j < b.length ? (b[j] as number) : Number.POSITIVE_INFINITY;
    const v = x <= y ? x : y;
    if (x === v) i++;
    if (y === v) j++;
    if (n === 0 || out[n - 1] !== v) out[n++] = v;
  }
  return out.subarray(0, n);
}

export interface ReceiveResult {
  /** How the memory part closed: END (migration, save) or CHECKPOINT (replication's initial sync). */
  closedBy: "end" | "checkpoint";
  rounds: number;
  pages: number;
  zeroPages: number;
  stateBytes: number;
  totalMs: number;
  /** Time from the final round's first record to the engine state loaded. */
  finalPhaseMs: number;
  /** The source's link translations (LINK_TRANSLATION, §3.15: it survived a failover), outermost first. */
  linkLayers?: TranslationEntry[][];
}

/**
 * Reads the memory part of an image stream into a paused (started) engine:
 * pages go straight into guest RAM, the engine state is loaded last. Stops
 * after the memory END (the caller reads the toolstack END). The reader has
 * already checked the grammar (full coverage in the first part, pfn
 * bounds); this checks that the machine is the receiving one: the source's
 * ENGINE_COMPAT, when it comes before the MEMORY_STREAM, and the machine
 * header, both before any page is applied.
 */
export async function receiveMachine(engine: Engine, reader: StreamReader, onProgress?: (p: TransferProgress) => void): Promise<ReceiveResult> {
  const started = monotonicMs();
  const result: ReceiveResult = { closedBy: "end", rounds: 0, pages: 0, zeroPages: 0, stateBytes: 0, totalMs: 0, finalPhaseMs: 0 };
  let finalStart: number | undefined;
  let round: { round: number; final: boolean; start: number; pages: number; zero: number; offset: number } | undefined;
  const report = () => {
    if (!round || !onProgress) return;
    const ms = Math.max(1, monotonicMs() - round.start);
    const bytes = reader.offset - round.offset;
    onProgress({
      round: round.round,
      final: round.final,
      pages: round.pages,
      zeroPages: round.zero,
      bytes,
      mbPerSec: bytes / 2 ** 20 / (ms / 1000),
      pagesPerSec: round.pages / (ms / 1000),
      elapsedMs: elapsedMs(started),
    });
  };
  for (;;) {
    const record = await reader.next();
    if (!record) throw new StreamError("TRUNCATED", undefined, "the stream ended inside the memory part");
    switch (record.kind) {
      case "engine-compat":
        checkEngineCompat(engine, record.compat, record.offset);
        break;
      case "link-translation":
        result.linkLayers = record.layers;
        break;
      case "memory-stream":
        break;
      case "machine-header":
        checkMachine(engine, record.machine, record.offset);
        break;
      case "precopy-round":
        report();
        round = { round: record.round.round, final: record.round.final, start: monotonicMs(), pages: 0, zero: 0, offset: record.offset };
        result.rounds++;
        if (record.round.final) finalStart = monotonicMs();
        break;
      case "page-data": {
        applyPageData(record.pages, engine.ram());
        const n = record.pages.pfns.length;
        let zero = 0;
        for (const t of record.pages.types) if (t === PAGE_TYPE.ZERO) zero++;
        result.pages += n;
        result.zeroPages += zero;
        if (round) {
          round.pages += n;
          round.zero += zero;
        }
        break;
      }
      case "engine-state":
        report();
        round = undefined;
        finalStart ??= monotonicMs();
        if (record.state.engineId !== engine.id || record.state.formatVersion !== engine.stateFormatVersion) {
          throw new StreamError(
            "MISMATCH",
            undefined,
            `engine state for ${record.state.engineId} format ${record.state.formatVersion}; this VM runs ${engine.id} format ${engine.stateFormatVersion}`,
          );
        }
        await engine.loadState(record.state.blob);
        result.stateBytes = record.state.blob.length;
        break;
      case "memory-end":
      case "checkpoint":
        result.closedBy = record.kind === "checkpoint" ? "checkpoint" : "end";
        result.totalMs = elapsedMs(started);
        result.finalPhaseMs = elapsedMs(finalStart ?? started);
        return result;
      case "skipped":
        break;
      default:
        throw new StreamError("OUT_OF_ORDER", undefined, `unexpected ${record.kind} record inside the memory part`);
    }
  }
}

/** Guest memory in MiB, for messages. */
export function memoryMiB(pages: number): number {
  return (pages * PAGE_SIZE) / 2 ** 20;
}
