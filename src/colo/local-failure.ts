/**
 * Whose failure ended a secondary's session (docs/replication.md
 * "Failover"). Either the peer's: the stream ended or broke (socket error or
 * close, silence past the peer timeout, a format error or a protocol
 * violation in what the primary sent); the lease rule then decides a
 * takeover. Or this side's own: its engine, VM or disk failed (pause,
 * resume, loadState, applying pages, a disk checkpoint on its own image);
 * then it steps down and never takes over. Local operations are marked
 * where they are called, with local() / localSync() / localDisk(), which
 * rethrow whatever they throw as a LocalFailure; every other error is the
 * peer's.
 */
import type { Engine } from "../engine/engine.js";
import { DiskReplicationError, type DiskReplicationErrorCode } from "./disk/errors.js";

export class LocalFailure extends Error {
  override readonly name = "LocalFailure";

  constructor(
    /** The operation of this side that failed ("loading the checkpoint's engine state"). */
    readonly what: string,
    override readonly cause: unknown,
  ) {
    super(`${what}: ${messageOf(cause)}`, { cause });
  }
}

/** An error's message (a thrown non-Error as text). */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** An asynchronous operation of this side's engine or VM: its failure is a LocalFailure. */
export async function local<T>(what: string, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    throw err instanceof LocalFailure ? err : new LocalFailure(what, err);
  }
}

/** A synchronous operation of this side's engine or VM: its failure is a LocalFailure. */
export function localSync<T>(what: string, op: () => T): T {
  try {
    return op();
  } catch (err) {
    throw err instanceof LocalFailure ? err : new LocalFailure(what, err);
  }
}

/** Disk errors that say the primary's records do not fit (out of range, out of order, incomplete, not now): the peer's. */
const PEER_DISK_CODES: ReadonlySet<DiskReplicationErrorCode> = new Set(["RANGE", "SEQUENCE", "INCOMPLETE", "STATE"]);

/**
 * A disk operation on this side's image and spill files. Its image or a
 * spill file failing (SPILL, UNDERLYING, or any other error) is a
 * LocalFailure; a DiskReplicationError saying the primary's records do not
 * fit (PEER_DISK_CODES) stays the peer's.
 */
export function localDisk<T>(what: string, op: () => T): T {
  try {
    return op();
  } catch (err) {
    if (err instanceof DiskReplicationError && PEER_DISK_CODES.has(err.code)) throw err;
    throw err instanceof LocalFailure ? err : new LocalFailure(what, err);
  }
}

/** The engine calls a secondary's checkpoint loop makes. */
export type LocalEngine = Pick<Engine, "id" | "stateFormatVersion" | "ram" | "takeDirtyPages" | "loadState">;

/** `engine` with each of those calls a local operation. */
export function localEngine(engine: Engine): LocalEngine {
  return {
    get id() {
      return engine.id;
    },
    get stateFormatVersion() {
      return engine.stateFormatVersion;
    },
    ram: () => localSync("the engine's RAM", () => engine.ram()),
    takeDirtyPages: () => localSync("finding the SVM's dirty pages", () => engine.takeDirtyPages()),
    loadState: (state, opts) => local("loading the checkpoint's engine state", () => engine.loadState(state, opts)),
  };
}
