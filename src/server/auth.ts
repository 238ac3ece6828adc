import { timingSafeEqual, createHash } from 'node:crypto';

/** Constant-time token comparison (hashes first so lengths do not leak). */
export function tokenMatches(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

/** The token of an `Authorization: Bearer <token>` value (or the value itself without the scheme). */
export const bearer = (header: unknown): string => String(header ?? '').replace(/^Bearer\s+/i, '');

/** gRPC calls: the metadata carries the configured token (always true when none is configured). */
export const metadataAuthorised = (md: { get(key: string): unknown[] }, token: string | undefined): boolean => !token || tokenMatches(bearer(md.get('authorization')[0]), token);

export const UNAUTHENTICATED_DETAILS = 'missing or wrong token (metadata authorization: Bearer <token>)';
