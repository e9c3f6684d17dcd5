/** "Did you mean ...?" for misspelt keys. */

/** Levenshtein distance (insert, delete, substitute; each costs 1). */
export function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitute = (previous[j - 1] ?? 0) + (a.charAt(i - 1) === b.charAt(j - 1) ? 0 : 1);
      const remove = (previous[j] ?? 0) + 1;
      const insert = (current[j - 1] ?? 0) + 1;
      current.push(Math.min(substitute, remove, insert));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

/**
 * The known key closest to `key`, if it is a plausible typo: equal ignoring
 * case and "-"/"_", or within an edit distance of 1 (keys up to 4 letters)
 * or 2 (longer keys). Ties go to the first in `known`.
 */
export function closestKey(key: string, known: readonly string[]): string | undefined {
  const normalise = (s: string): string => s.toLowerCase().replace(/-/g, "_");
  const wanted = normalise(key);
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of known) {
    const distance = editDistance(wanted, normalise(candidate));
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  const limit = wanted.length <= 4 ? 1 : 2;
  return best !== undefined && bestDistance <= limit ? best : undefined;
}

/** " (did you mean "x"?)" or "". */
export function didYouMean(key: string, known: readonly string[]): string {
  const match = closestKey(key, known);
  return match === undefined ? "" : ` (did you mean "${match}"?)`;
}
