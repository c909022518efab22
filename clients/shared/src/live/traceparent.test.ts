import { afterEach, describe, expect, it, vi } from "vitest";
import { TRACE_PARENT, newTraceParent, randomHex } from "./traceparent";

describe("newTraceParent", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("is a W3C version-00 traceparent: 32-hex trace id, 16-hex parent id, sampled", () => {
    const tp = newTraceParent();
    expect(tp).toHaveLength(55);
    const m = TRACE_PARENT.exec(tp);
    expect(m).not.toBeNull();
    const [, traceId, parentId, flags] = m!;
    expect(traceId).not.toMatch(/^0+$/);
    expect(parentId).not.toMatch(/^0+$/);
    expect(flags).toBe("01");
  });

  it("is new for every command", () => {
    const ids = Array.from({ length: 200 }, () => newTraceParent());
    expect(new Set(ids).size).toBe(200);
    expect(new Set(ids.map((tp) => tp.slice(3, 35))).size).toBe(200);
  });

  it("never uses the all-zeros ids the spec reserves as invalid", () => {
    const tp = newTraceParent((n) => "00".repeat(n));
    expect(tp).toBe(`00-${"0".repeat(31)}1-${"0".repeat(15)}1-01`);
    expect(tp).toMatch(TRACE_PARENT);
  });

  it("works without crypto.getRandomValues (falls back to Math.random)", () => {
    vi.stubGlobal("crypto", undefined);
    expect(randomHex(8)).toMatch(/^[0-9a-f]{16}$/);
    expect(newTraceParent()).toMatch(TRACE_PARENT);
  });
});
