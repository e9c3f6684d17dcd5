/**
 * Creates the guest's data disk: a sparse raw image formatted ext4 with the
 * host's mkfs.ext4 (e2fsprogs). The guest sees it as /dev/sda (emu: IDE) or
 * /dev/vda (qemu: virtio-blk), mounts it on /data and keeps Redis's
 * append-only file there.
 */

import { access, constants, lstat, open, rm } from "node:fs/promises";
import { resolve } from "node:path";
import { GuestBuildError } from "./errors.js";
import { run } from "./run.js";

export interface CreateDataDiskOptions {
  /** Replace an existing file at `path` (default: refuse). */
  overwrite?: boolean;
}

/** Smallest disk we make: ext4 with a journal needs a few MiB. */
export const MIN_DATA_DISK_MIB = 8;
/** v86 keeps IDE offsets in JS numbers; stay far below trouble. */
export const MAX_DATA_DISK_MIB = 64 * 1024;
const MiB = 2 ** 20;

/** mkfs.ext4 lives in /sbin or /usr/sbin, which a non-login PATH may lack; else try PATH. */
const MKFS_PATHS = ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"];
const MKFS_NAME = "mkfs.ext4";

async function findMkfs(): Promise<string> {
  for (const candidate of MKFS_PATHS) {
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not there: try the next one
    }
  }
  return MKFS_NAME;
}

async function pathExists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Creates `path` as a sparse file of `sizeMiB` MiB and formats it ext4
 * (label "colo-data", no reserved blocks, inode tables and journal
 * initialized now so the guest's ext4lazyinit does not write in the
 * background). Refuses to replace an existing file unless `overwrite`.
 */
export async function createDataDisk(path: string, sizeMiB: number, opts: CreateDataDiskOptions = {}): Promise<void> {
  const target = resolve(path);
  if (!Number.isInteger(sizeMiB) || sizeMiB < MIN_DATA_DISK_MIB || sizeMiB > MAX_DATA_DISK_MIB) {
    throw new GuestBuildError("INVALID_OPTION", `data disk ${target}: size ${sizeMiB} MiB is not an integer between ${MIN_DATA_DISK_MIB} and ${MAX_DATA_DISK_MIB}`);
  }
  if (await pathExists(target)) {
    if (opts.overwrite !== true) {
      throw new GuestBuildError("DISK_EXISTS", `data disk ${target} already exists (pass overwrite to replace it)`);
    }
    await rm(target, { force: true });
  }
  // A new image has no history: an activity log left beside an old one of that name (docs/specs/activity-log.md) goes.
  await rm(`${target}.colo-al`, { force: true });

  let created = false;
  try {
    const fh = await open(target, "wx", 0o644);
    created = true;
    try {
      await fh.truncate(sizeMiB * MiB);
    } finally {
      await fh.close();
    }
    await run(await findMkfs(), ["-F", "-q", "-b", "4096", "-L", "colo-data", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0", target], {
      failCode: "DISK_FAILED",
      what: `formatting data disk ${target}`,
    });
  } catch (e) {
    if (created) await rm(target, { force: true });
    if (e instanceof GuestBuildError) throw e;
    throw new GuestBuildError("DISK_FAILED", `data disk ${target}: ${(e as Error).message}`, { cause: e });
  }
}
