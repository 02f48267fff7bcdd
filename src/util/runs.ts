// Runs of consecutive numbers: segment lists become ranges so that tables and pushes take one call per
// range instead of one per segment.

/** Sorted, distinct segments as runs of consecutive ones. */
export function runsOf(sorted: number[]): number[][] {
  const runs: number[][] = [];
  for (const s of sorted) {
    const last = runs[runs.length - 1];
    if (last && last[last.length - 1] === s - 1) last.push(s);
    else runs.push([s]);
  }
  return runs;
}
