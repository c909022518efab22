import { describe, expect, it } from "vitest";
import { refreshDelay } from "./refresh";

describe("refreshDelay", () => {
  it("refreshes a 15-minute token one minute early", () => {
    expect(refreshDelay(0, 0, 15 * 60_000)).toBe(14 * 60_000);
  });
  it("refreshes a 1-minute token at 80 %", () => {
    expect(refreshDelay(0, 0, 60_000)).toBe(48_000);
  });
  it("keeps at least 5 s of lead for short tokens", () => {
    expect(refreshDelay(0, 0, 10_000)).toBe(5_000);
  });
  it("never schedules in the past", () => {
    expect(refreshDelay(100_000, 0, 60_000)).toBe(1_000);
  });
});
