import { describe, expect, it } from "vitest";
import { backoffDelay } from "./backoff";

describe("backoffDelay", () => {
  it("grows exponentially up to the cap", () => {
    const hi = () => 0.999999;
    const ceil = [1, 2, 3, 4, 5, 6, 7, 8].map((n) => backoffDelay(n, { random: hi }));
    expect(ceil).toEqual([500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]);
  });

  it("never waits less than half the ceiling", () => {
    const lo = () => 0;
    expect([1, 2, 3, 10].map((n) => backoffDelay(n, { random: lo }))).toEqual([250, 500, 1000, 7500]);
  });

  it("spreads clients with jitter", () => {
    const seen = new Set<number>();
    for (let i = 0; i < 50; i++) seen.add(backoffDelay(4));
    expect(seen.size).toBeGreaterThan(10);
    for (const d of seen) {
      expect(d).toBeGreaterThanOrEqual(2000);
      expect(d).toBeLessThanOrEqual(4000);
    }
  });

  it("treats attempts below 1 as the first", () => {
    expect(backoffDelay(0, { random: () => 0 })).toBe(250);
  });
});
