/** Sorted pfn lists: the union a COLO primary sends (PVM-dirty ∪ SVM-dirty, COLO-PROTOCOL.md §4 step 4). */

/** The sorted union, each pfn once, of two ascending lists (as takeDirtyPages() and the dirty list give). */
export function unionSortedPfns(a: Uint32Array, b: Uint32Array): Uint32Array {
  const out = new Uint32Array(a.length + b.length);
  let i = 0;
  let j = 0;
  let n = 0;
  let last = -1;
  const push = (pfn: number): void => {
    if (pfn !== last) {
      out[n++] = pfn;
      last = pfn;
    }
  };
  while (i < a.length || j < b.length) {
    const x = i < a.length ? (a[i] ?? 0) : Infinity;
    const y = j < b.length ? (b[j] ?? 0) : Infinity;
    if (x <= y) {
      push(x);
      i++;
      if (x === y) j++;
    } else {
      push(y);
      j++;
    }
  }
  return out.slice(0, n);
}
