/**
 * refreshDelay says how long to wait before refreshing an access token issued
 * at issuedAt and expiring at expiresAt (all ms): refresh when 20 % of the
 * lifetime is left, but at least 5 s and at most 60 s before expiry, and
 * never sooner than 1 s from now.
 */
export function refreshDelay(now: number, issuedAt: number, expiresAt: number): number {
  const lifetime = Math.max(0, expiresAt - issuedAt);
  const lead = Math.min(60_000, Math.max(5_000, lifetime * 0.2));
  return Math.max(1_000, expiresAt - lead - now);
}
