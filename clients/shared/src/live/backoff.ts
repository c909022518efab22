/** BackoffOptions shape the reconnect delays; every field has a default. */
export interface BackoffOptions {
  /** initialMs is the first delay's ceiling; default 500. */
  initialMs?: number;
  /** maxMs caps every delay; default 15000. */
  maxMs?: number;
  /** factor multiplies the ceiling per attempt; default 2. */
  factor?: number;
  /** random returns a number in [0, 1); default Math.random. */
  random?: () => number;
}

/**
 * backoffDelay is the wait before reconnect attempt `attempt` (1-based):
 * exponential growth with "equal jitter" — half the ceiling fixed, half
 * random — so a fleet of clients that lost the same server does not come
 * back in lockstep, and no attempt waits less than half its ceiling.
 */
export function backoffDelay(attempt: number, opts: BackoffOptions = {}): number {
  const initial = opts.initialMs ?? 500;
  const max = opts.maxMs ?? 15_000;
  const factor = opts.factor ?? 2;
  const random = opts.random ?? Math.random;
  const n = Math.max(1, Math.floor(attempt));
  const ceiling = Math.min(max, initial * Math.pow(factor, n - 1));
  const half = ceiling / 2;
  return Math.round(half + random() * half);
}
