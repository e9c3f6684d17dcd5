/**
 * Another process as /proc shows it: whether it still runs (kill(pid, 0)
 * and /proc/<pid>/stat: a zombie has exited and only waits to be reaped),
 * its descriptors, where it maps a file.
 */
import { readdirSync, readFileSync, readlinkSync, statSync } from "node:fs";

/** Has process `pid` ended? True when it no longer exists or is a zombie. */
export function processEnded(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ESRCH";
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return true;
  }
}

/** The numbers of process `pid`'s descriptors whose /proc link reads `link` (e.g. "anon_inode:[userfaultfd]"). */
export function descriptorsLinkedTo(pid: number, link: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${name}`);
    } catch {
      continue; // closed meanwhile
    }
    if (target === link) out.push(Number(name));
  }
  return out.sort((a, b) => a - b);
}

/**
 * Where process `pid` maps the file open at `path` (any path to it, e.g.
 * /proc/<our pid>/fd/<fd> of an unlinked file): the start addresses of its
 * mappings of that file (device and inode, from /proc/<pid>/maps) that are
 * `length` bytes long from offset 0.
 */
export function mappingsOfFile(pid: number, path: string, length: number): bigint[] {
  const st = statSync(path);
  const out: bigint[] = [];
  for (const line of readFileSync(`/proc/${pid}/maps`, "utf8").split("\n")) {
    // 7fae83fff000-7fae8bfff000 rw-s 00000000 00:1b 2   /dev/shm/x (deleted)
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ ([0-9a-f]+) ([0-9a-f]+):([0-9a-f]+) (\d+)/.exec(line);
    if (m === null) continue;
    const [, from, to, offset, major, minor, inode] = m as unknown as [string, string, string, string, string, string, string];
    if (Number(inode) !== st.ino || BigInt(`0x${offset}`) !== 0n) continue;
    // st_dev as the kernel encodes it (new_encode_dev): minor's low 8 bits, major, minor's high bits.
    const maj = Number.parseInt(major, 16);
    const min = Number.parseInt(minor, 16);
    if ((min & 0xff) + maj * 0x100 + (min >>> 8) * 0x100000 !== st.dev) continue;
    if (BigInt(`0x${to}`) - BigInt(`0x${from}`) !== BigInt(length)) continue;
    out.push(BigInt(`0x${from}`));
  }
  return out;
}

/** The thread ids of process `pid` (/proc/<pid>/task); none when it is gone. */
export function threadsOf(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).map(Number).filter(Number.isInteger);
  } catch {
    return [];
  }
}
