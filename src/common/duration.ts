/** Seconds in a duration written as 90s, 30m, 2h, 1h30m or a bare number of seconds; NaN if it is not one (or not positive). */
export function parseDuration(v: string): number {
  const m = /^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$/.exec(v.trim());
  const s = m ? Number(m[1] ?? 0) * 3600 + Number(m[2] ?? 0) * 60 + Number(m[3] ?? 0) : NaN;
  return s > 0 ? s : NaN;
}
