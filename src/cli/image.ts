import { resolve } from "node:path";
import { InvalidArgumentError } from "commander";
import { type GuestImage, buildGuestImage, defaultGuestCacheDir } from "../../guest/build.js";
import { createDataDisk } from "../../guest/mkdisk.js";
import { GUEST_TARGETS, type GuestTarget, guestTarget } from "../../guest/target.js";
import { monotonicMs } from "../sys/clock.js";

/** `--arch`: one guest architecture, or every one. */
export type ImageArch = GuestTarget["arch"] | "all";

/** Parses `--arch i386|amd64|all`. */
export function imageArchArg(value: string): ImageArch {
  if (value === "all" || GUEST_TARGETS.some((t) => t.arch === value)) return value as ImageArch;
  throw new InvalidArgumentError(`expected ${[...GUEST_TARGETS.map((t) => t.arch), "all"].join(", ")}, got "${value}"`);
}

/**
 * The cache directory of `target` for this invocation: `--cache DIR` is the
 * i386 (first) target's directory, as it always was; with several targets the
 * others go beside it as `DIR-<arch>`, as the defaults do (`.cache/guest`,
 * `.cache/guest-amd64`). With one target, `--cache DIR` is its directory.
 */
export function imageCacheDir(target: GuestTarget, targets: readonly GuestTarget[], cache: string | undefined): string {
  if (cache === undefined) return defaultGuestCacheDir(target);
  const dir = resolve(cache);
  return targets.length === 1 || target === targets[0] ? dir : `${dir}-${target.arch}`;
}

/**
 * `colo image build [--arch A]`: builds or reuses the cached guest images
 * (default: every target, the emu engine's i386 guest and the qemu engine's
 * amd64 guest), in parallel, with progress.
 */
export async function imageBuild(o: { force?: boolean; cache?: string; arch?: ImageArch }): Promise<void> {
  const arch = o.arch ?? "all";
  const targets = arch === "all" ? GUEST_TARGETS : [guestTarget(arch)];
  const started = monotonicMs();
  const results = await Promise.allSettled(
    targets.map(async (target) => {
      const t0 = monotonicMs();
      const image = await buildGuestImage({
        target,
        cacheDir: imageCacheDir(target, targets, o.cache),
        force: o.force === true,
        log: (line) => process.stderr.write(`image ${target.arch}: ${line}\n`),
      });
      return { image, seconds: (monotonicMs() - t0) / 1000 };
    }),
  );
  const failed: string[] = [];
  results.forEach((r, i) => {
    if (r.status === "fulfilled") process.stdout.write(describe(r.value.image, r.value.seconds));
    else failed.push(`${(targets[i] as GuestTarget).arch}: ${r.reason instanceof Error ? r.reason.message : String(r.reason)}`);
  });
  if (targets.length > 1) process.stdout.write(`(${((monotonicMs() - started) / 1000).toFixed(1)} s in all)\n`);
  if (failed.length > 0) throw new Error(`image build failed: ${failed.join("; ")}`);
}

function describe(image: GuestImage, seconds: number): string {
  const lines = [`${image.arch}:`, `kernel  ${image.kernel}`];
  if (image.vmlinux !== undefined) lines.push(`vmlinux ${image.vmlinux}`);
  lines.push(`initrd  ${image.initrd}`, `manifest ${image.manifest}`, `(${seconds.toFixed(1)} s)`);
  return `${lines.join("\n")}\n`;
}

/** `colo disk-create PATH`: an empty ext4 data disk for the guest's Redis. */
export async function diskCreate(path: string, o: { size: number; force?: boolean }): Promise<void> {
  await createDataDisk(resolve(path), o.size, { overwrite: o.force === true });
  process.stdout.write(`${resolve(path)}: ${o.size} MiB ext4\n`);
}
