/**
 * Helpers for tests of the replication sessions (tests only): a
 * SecondaryVm around an engine whose VM-level operations do nothing unless
 * a test gives them, and the primary's DISK_INFO for an image.
 */
import type { BlockBackend, Engine } from "../engine/engine.js";
import type { StreamWriter } from "../state/index.js";
import { hashBackend } from "./disk/image-hash.js";
import type { SecondaryDiskSlot, SecondaryVm } from "./secondary.js";

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
    deliverInput: () => undefined,
    sendOutput: () => undefined,
    takeOver: noop,
    discard: noop,
    ...overrides,
  };
}

/** The primary's DISK_INFO for `image` as disk `disk` (its chunk hashes, as DiskForwarder sends them). */
export async function writeDiskInfoOf(writer: StreamWriter, disk: number, image: BlockBackend): Promise<void> {
  const hashes = await hashBackend(image);
  await writer.writeDiskInfo({ disk, chunkSize: hashes.chunkBytes, size: image.byteLength, chunkHashes: hashes.chunks.map((h) => Uint8Array.from(Buffer.from(h, "hex"))) });
}
