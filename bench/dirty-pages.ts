/**
 * Dirtying a known number of guest pages through the guest's Redis (the
 * checkpoint-pause benches): one string of many 4 KiB steps, allocated once,
 * then a Lua script that writes a new tag at the start of the first N steps.
 */

/** Runs one Redis command in the guest (redis-cli from the lab's client) and answers its reply. */
export type RedisCommand = (...args: string[]) => Promise<string>;

const PAGE = 4096;
const DIRTY_KEY = "colo:dirty";
/** Writes ARGV[2] (a short tag, new each time) at the start of each of the first ARGV[1] 4 KiB steps of KEYS[1]: that many distinct pages change. */
const DIRTY_SCRIPT = `local n = tonumber(ARGV[1]) for i = 0, n - 1 do redis.call('SETRANGE', KEYS[1], i * ${PAGE}, ARGV[2]) end return n`;

/** The string of `pages` pages (zero-filled by Redis); its allocation dirties pages of its own. */
export async function allocateDirtyBuffer(redis: RedisCommand, pages: number): Promise<void> {
  await redis("SETRANGE", DIRTY_KEY, String(pages * PAGE - 1), "x");
}

/** Dirties the first `pages` pages of the buffer with `tag` (new each time: emu finds dirty pages by comparing RAM). */
export async function dirtyPages(redis: RedisCommand, pages: number, tag: string): Promise<void> {
  const out = await redis("EVAL", DIRTY_SCRIPT, "1", DIRTY_KEY, String(pages), tag);
  if (out !== String(pages)) throw new Error(`EVAL of ${pages} SETRANGEs answered ${JSON.stringify(out)}`);
}
