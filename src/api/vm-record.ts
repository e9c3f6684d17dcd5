import { readFileSync, renameSync, writeFileSync } from "node:fs";

/** What a VM daemon writes about itself next to its control socket. */
export interface VmRecord {
  name: string;
  pid: number;
  config: string;
  startedAt: string;
  /** The network namespace the daemon runs in (from `ip netns identify`), if any. */
  netns?: string;
}

export function writeRecord(path: string, record: VmRecord): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(record, null, 2) + "\n");
  renameSync(tmp, path);
}

/** Reads a record; undefined when missing or unreadable (a dying daemon may be removing it). */
export function readRecord(path: string): VmRecord | undefined {
  try {
    const v = JSON.parse(readFileSync(path, "utf8")) as Partial<VmRecord>;
    if (typeof v.name !== "string" || typeof v.pid !== "number" || typeof v.config !== "string" || typeof v.startedAt !== "string") return undefined;
    return v as VmRecord;
  } catch {
    return undefined;
  }
}
