import { timingSafeEqual, createHash } from 'node:crypto';

/** Constant-time token comparison (hashes first so lengths do not leak). */
export function tokenMatches(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}
