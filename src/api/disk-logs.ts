/**
 * The activity logs of a daemon's writable images (docs/specs/activity-log.md;
 * src/colo/disk/activity-log.ts): one ImageLog per raw image, its write-ahead
 * hook on the image (`RawDiskBackend.beforeWrite`), kept for the daemon's
 * life (a survivor's log outlives its session into the next, where it is
 * the primary's).
 *
 * A log may only say what it knows. Every path that opens an image
 * read-write (docs/operations.md "Re-protection"):
 * - `colo create` (boot), `colo restore`, `colo migrate-receive` (a live
 *   migration's destination): the guest writes the image without anything
 *   keeping its log, so the log is deleted before the VM starts
 *   (dropActivityLogs);
 * - `colo migrate-receive --colo` (a secondary): the session reports the
 *   log (DISK_LOG), deletes it before the image's first write, writes the
 *   replica log once the image holds a checkpoint durably, the survivor's at
 *   a takeover, and deletes the logs of writable disks the primary does not
 *   replicate (src/colo/secondary-disk-logs.ts);
 * - a primary (`colo remus`, `colo protect`, `colo migrate --colo`) keeps the
 *   log it has (a survivor's) marking until its session replaces it
 *   (src/colo/primary-disk-logs.ts), and keeps the session's log marking after
 *   the session ends.
 * `colo check` opens images only to see that it can. An image changed
 * outside colo (qemu-img, a mount, a copy, an older colo) cannot be
 * detected: `--full-disk-sync`, or deleting `<image>.colo-al`, is the remedy.
 */
import { ImageLog } from "../colo/disk/image-log.js";
import { removeLog } from "../colo/disk/activity-log.js";
import type { VmConfig } from "../config/index.js";
import type { RawDiskBackend } from "../vm/raw-disk.js";
import type { Logger } from "./log.js";

const logs = new WeakMap<RawDiskBackend, ImageLog>();

/** The activity log of a writable raw image (one per image per daemon); `logger` hears of a log dropped because it could not be marked. */
export function imageLogOf(raw: RawDiskBackend, logger: Logger): ImageLog {
  let log = logs.get(raw);
  if (!log) {
    log = new ImageLog(raw.path, (hook) => (raw.beforeWrite = hook), {
      onDropped: (err) => logger.warn({ image: raw.path, error: err.message }, "the activity log could not be marked: deleted (a later re-protection hashes this disk)"),
    });
    logs.set(raw, log);
  }
  return log;
}

/** Before a VM runs on its writable images without keeping their logs (boot, restore, a migration's destination): the logs go. */
export function dropActivityLogs(config: VmConfig, log: Logger): void {
  for (const d of config.disks) {
    if (d.access !== "rw") continue;
    if (removeLog(d.target)) log.info({ image: d.target }, "activity log deleted: this VM writes the image without keeping it");
  }
}
