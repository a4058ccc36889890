// Figures over the rounds of a benchmark: one start or one round on a shared 2-core machine
// swings by a third or more, so the benches print every round and these beside them.

/** The median of the numbers that are not NaN (NaN: none). */
export const median = (xs: number[]) => {
  const v = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
};
