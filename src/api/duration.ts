// Durations as the CRDs and flags write them: 30s, 10m, 1h, 250ms, or a bare number of seconds.
// The CRDs carry DURATION_PATTERN, so the API server refuses anything else.
export const DURATION_PATTERN = "^[0-9]+(\\.[0-9]+)?(ms|s|m|h)?$";

/** Seconds, or undefined when `value` is not a duration. */
export function durationSeconds(value: string): number | undefined {
  const m = new RegExp(DURATION_PATTERN).exec(value.trim());
  if (!m) return undefined;
  const n = Number(value.trim().replace(/(ms|s|m|h)$/, ""));
  const unit = m[2] ?? "s";
  return unit === "ms" ? n / 1000 : unit === "s" ? n : unit === "m" ? n * 60 : n * 3600;
}
