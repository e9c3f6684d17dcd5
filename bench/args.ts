/** `--name N` from the command line: a positive whole number, or `fallback` when absent. */
export function positiveIntArg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  const v = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!Number.isInteger(v) || v <= 0) throw new Error(`${name} must be a positive whole number`);
  return v;
}

/** `--name a,b,c` from the command line: the comma-separated items (none empty), or `fallback` when absent. */
export function listArg(name: string, fallback: readonly string[]): string[] {
  const i = process.argv.indexOf(name);
  if (i < 0) return [...fallback];
  const items = (process.argv[i + 1] ?? "").split(",").map((s) => s.trim());
  if (items.length === 0 || items.some((s) => s === "")) throw new Error(`${name} must be a comma-separated list`);
  return items;
}

/** `--name a,b,c` where each item is a positive whole number. */
export function positiveIntListArg(name: string, fallback: readonly number[]): number[] {
  return listArg(name, fallback.map(String)).map((s) => {
    const v = Number(s);
    if (!Number.isInteger(v) || v <= 0) throw new Error(`${name}: ${s} is not a positive whole number`);
    return v;
  });
}

/** `--name VALUE` from the command line, or `fallback` (undefined: required). */
export function stringArg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(name);
  const v = i >= 0 ? process.argv[i + 1] : fallback;
  if (v === undefined || v === "" || (i >= 0 && v.startsWith("--"))) throw new Error(`${name} needs a value`);
  return v;
}
