import type { BlockBackend } from "../engine/engine.js";
import type { RawDiskBackend } from "./raw-disk.js";

/**
 * The block device the engine sees for one disk: the raw image by default,
 * or a layer put in front of it at run time (COLO disk replication on
 * either side). The engine is built once; what serves its reads and writes
 * may change while the VM is paused.
 */
export class DiskSlot implements BlockBackend {
  private layer: BlockBackend | undefined;

  constructor(readonly raw: RawDiskBackend) {}

  get byteLength(): number {
    return this.raw.byteLength;
  }

  /** Put `layer` in front of the raw image (undefined: the raw image again). Its size must match. */
  interpose(layer: BlockBackend | undefined): void {
    if (layer && layer.byteLength !== this.raw.byteLength) {
      throw new Error(`a disk layer of ${layer.byteLength} bytes cannot serve a ${this.raw.byteLength}-byte disk`);
    }
    this.layer = layer;
  }

  get interposed(): boolean {
    return this.layer !== undefined;
  }

  read(offset: number, length: number): Uint8Array {
    return (this.layer ?? this.raw).read(offset, length);
  }

  write(offset: number, data: Uint8Array): void {
    (this.layer ?? this.raw).write(offset, data);
  }

  /**
   * The guest's flush goes to what serves the disk: the raw image (fdatasync),
   * or the layer in front of it, which decides what a flush means there (a
   * secondary's overlay holds the SVM's writes in memory until the next
   * checkpoint discards them: nothing to make durable).
   */
  flush(): void {
    const layer = this.layer;
    if (layer !== undefined) layer.flush?.();
    else this.raw.flush();
  }
}
