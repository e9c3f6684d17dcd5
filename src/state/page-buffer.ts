/**
 * PageBuffer: pages received but not yet applied. A COLO secondary collects
 * a checkpoint's PAGE_DATA here and applies it only once CHECKPOINT_END has
 * arrived, or discards it (COLO-PROTOCOL.md §4 step 5). Each pfn is held
 * once (a later record replaces an earlier one), so the buffer never grows
 * beyond guest memory.
 */
import { PAGE_SIZE } from "../engine/engine.js";
import { StreamError } from "./errors.js";
import type { PageData } from "./page-data.js";
import { PAGE_TYPE } from "./pfn-entry.js";

export class PageBuffer {
  /** pfn → contents, or null for a zero page. */
  private readonly pages = new Map<number, Uint8Array | null>();

  constructor(readonly pageCount: number) {}

  /** Distinct pages held. */
  get size(): number {
    return this.pages.size;
  }

  /** Octets of page contents held (zero pages cost none). */
  get contentBytes(): number {
    let n = 0;
    for (const p of this.pages.values()) if (p !== null) n += PAGE_SIZE;
    return n;
  }

  /** Take a record's pages (copied: the record's buffers may be dropped). */
  add(record: PageData): void {
    let dataIndex = 0;
    for (let i = 0; i < record.pfns.length; i++) {
      const pfn = record.pfns[i] ?? 0;
      if (pfn >= this.pageCount) throw new StreamError("MISMATCH", undefined, `pfn ${pfn} outside a buffer of ${this.pageCount} pages`);
      if (record.types[i] === PAGE_TYPE.ZERO) {
        this.pages.set(pfn, null);
        continue;
      }
      const contents = record.data.subarray(dataIndex * PAGE_SIZE, (dataIndex + 1) * PAGE_SIZE);
      dataIndex++;
      const held = this.pages.get(pfn);
      if (held) held.set(contents);
      else this.pages.set(pfn, contents.slice());
    }
  }

  /** Write every held page into `ram` (pageCount pages), then empty the buffer. */
  applyTo(ram: Uint8Array): void {
    if (ram.length !== this.pageCount * PAGE_SIZE) {
      throw new StreamError("MISMATCH", undefined, `RAM view of ${ram.length} octets for a buffer of ${this.pageCount} pages`);
    }
    for (const [pfn, contents] of this.pages) {
      const at = pfn * PAGE_SIZE;
      if (contents === null) ram.fill(0, at, at + PAGE_SIZE);
      else ram.set(contents, at);
    }
    this.pages.clear();
  }

  /** The held pfns, ascending. */
  pfns(): Uint32Array {
    return Uint32Array.from(this.pages.keys()).sort();
  }

  /** Drop everything (a half-received checkpoint). */
  clear(): void {
    this.pages.clear();
  }
}
