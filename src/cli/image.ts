import { resolve } from "node:path";
import { buildGuestImage, defaultGuestCacheDir } from "../../guest/build.js";
import { createDataDisk } from "../../guest/mkdisk.js";

/** `colo image build`: builds or reuses the cached guest image, with progress. */
export async function imageBuild(o: { force?: boolean; cache?: string }): Promise<void> {
  const cacheDir = o.cache ? resolve(o.cache) : defaultGuestCacheDir();
  const started = Date.now();
  const image = await buildGuestImage({
    cacheDir,
    force: o.force === true,
    log: (line) => process.stderr.write(`image: ${line}\n`),
  });
  process.stdout.write(
    `kernel  ${image.kernel}\ninitrd  ${image.initrd}\nmanifest ${image.manifest}\n(${((Date.now() - started) / 1000).toFixed(1)} s)\n`,
  );
}

/** `colo disk-create PATH`: an empty ext4 data disk for the guest's Redis. */
export async function diskCreate(path: string, o: { size: number; force?: boolean }): Promise<void> {
  await createDataDisk(resolve(path), o.size, { overwrite: o.force === true });
  process.stdout.write(`${resolve(path)}: ${o.size} MiB ext4\n`);
}
