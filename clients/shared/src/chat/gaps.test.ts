import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { create } from "@bufbuild/protobuf";
import { MessageSchema } from "../gen/chat/v1/chat_pb";
import { GapFiller, type GapOptions, type HistoryPage } from "./gaps";
import type { ChatMessage } from "./model";

const K = "room:general";

/** page is what the server answers for messages after afterSeq when it holds 1..last. */
function page(afterSeq: number, limit: number, last: number): HistoryPage {
  const messages = [];
  for (let s = afterSeq + 1; s <= Math.min(last, afterSeq + limit); s++) {
    messages.push(create(MessageSchema, { id: `m${s}`, seq: BigInt(s), sender: "bob", body: { case: "text", value: `t${s}` } }));
  }
  return { messages, hasMore: afterSeq + limit < last };
}

function setup(opts: Partial<GapOptions> & { last?: number; failures?: number } = {}) {
  const fetches: string[] = [];
  const delivered: ChatMessage[] = [];
  const resumes: string[] = [];
  let failures = opts.failures ?? 0;
  const f = new GapFiller({
    fetchAfter: async (key, afterSeq, limit) => {
      fetches.push(`${key} ${afterSeq} ${limit}`);
      if (failures > 0) {
        failures -= 1;
        throw new Error("unavailable");
      }
      return page(afterSeq, limit, opts.last ?? 1_000_000);
    },
    deliver: (_key, messages) => delivered.push(...messages),
    resume: (key, afterSeq) => resumes.push(`${key} ${afterSeq}`),
    backoff: { initialMs: 1000, random: () => 0 },
    ...opts,
  });
  return { f, fetches, delivered, resumes, seqs: () => delivered.map((m) => m.seq) };
}

describe("GapFiller", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("delivers messages in order and drops one at or below the cursor as a duplicate", async () => {
    const t = setup();
    expect([1, 2, 2, 1, 3].map((s) => t.f.message(K, s, undefined))).toEqual(["deliver", "deliver", "duplicate", "duplicate", "deliver"]);
    // The state's cursor counts too (it had 1..9 from history).
    expect(t.f.message("room:dev", 9, 9)).toBe("duplicate");
    expect(t.f.message("room:dev", 10, 9)).toBe("deliver");
    await vi.advanceTimersByTimeAsync(5000);
    expect(t.fetches).toEqual([]);
    expect(t.f.cursor(K, 0)).toBe(3);
  });

  it("tells no gap in a conversation it has no cursor for", async () => {
    const t = setup();
    expect(t.f.message(K, 7, undefined)).toBe("deliver");
    expect(t.f.missing(K)).toBe(0);
    await vi.advanceTimersByTimeAsync(5000);
    expect(t.fetches).toEqual([]);
  });

  it("does not fetch a gap that fills itself within the grace (another node's older messages)", async () => {
    const t = setup();
    t.f.message(K, 1, 0);
    expect(t.f.message(K, 4, undefined)).toBe("deliver");
    expect(t.f.missing(K)).toBe(2);
    expect(t.f.cursor(K, 4)).toBe(1);
    expect(t.f.message(K, 3, undefined)).toBe("deliver");
    expect(t.f.message(K, 2, undefined)).toBe("deliver");
    expect(t.f.message(K, 3, undefined)).toBe("duplicate");
    await vi.advanceTimersByTimeAsync(5000);
    expect(t.fetches).toEqual([]);
    expect(t.f.cursor(K, 4)).toBe(4);
  });

  it("fetches a gap after the grace, page by page, and moves the cursor past it", async () => {
    const t = setup();
    expect(t.f.message(K, 260, 10)).toBe("deliver");
    expect(t.f.missing(K)).toBe(249);
    await vi.advanceTimersByTimeAsync(999);
    expect(t.fetches).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(t.fetches).toEqual([`${K} 10 100`, `${K} 110 100`, `${K} 210 49`]);
    expect(t.seqs()).toEqual(Array.from({ length: 249 }, (_, i) => 11 + i));
    expect(t.f.missing(K)).toBe(0);
    expect(t.f.cursor(K, 260)).toBe(260);
    // What the fill brought is no longer awaited: a late live copy is a duplicate.
    expect(t.f.message(K, 100, undefined)).toBe("duplicate");
  });

  it("fills several gaps, and only the newest maxFill of a long one", async () => {
    const t = setup({ maxFill: 5, graceMs: 0 });
    t.f.message(K, 1, 0);
    t.f.message(K, 4, undefined); // 2, 3 missing
    t.f.message(K, 12, undefined); // 5..11 missing: 2 more than the cap
    expect(t.f.missing(K)).toBe(5);
    expect(t.f.cursor(K, 12)).toBe(6);
    await vi.advanceTimersByTimeAsync(0);
    expect(t.fetches).toEqual([`${K} 6 5`]);
    expect(t.seqs()).toEqual([7, 8, 9, 10, 11]);
    expect(t.f.cursor(K, 12)).toBe(12);
  });

  it("retries a failed fetch with backoff, then resumes from before the gap; the cursor waits there", async () => {
    const t = setup({ failures: 3 });
    t.f.message(K, 8, 3);
    await vi.advanceTimersByTimeAsync(1000);
    expect(t.fetches).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(500); // attempt 2 after backoffDelay(1) = 500
    expect(t.fetches).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(1000); // attempt 3 after backoffDelay(2) = 1000
    expect(t.fetches).toEqual([`${K} 3 4`, `${K} 3 4`, `${K} 3 4`]);
    expect(t.resumes).toEqual([`${K} 3`]);
    expect(t.delivered).toEqual([]);
    expect(t.f.cursor(K, 8)).toBe(3);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(t.fetches).toHaveLength(3);
    // The replay the Resume brings closes the gap.
    t.f.seen(K, [4, 5, 6, 7, 8]);
    expect(t.f.missing(K)).toBe(0);
    expect(t.f.cursor(K, 8)).toBe(8);
  });

  it("stops waiting for seqs the server does not have", async () => {
    const t = setup({ last: 5, graceMs: 0 });
    t.f.message(K, 1, 0);
    t.f.message(K, 9, undefined); // the server holds 1..5 only: 6..8 never come
    await vi.advanceTimersByTimeAsync(0);
    expect(t.fetches).toEqual([`${K} 1 7`]);
    expect(t.seqs()).toEqual([2, 3, 4, 5]);
    expect(t.f.missing(K)).toBe(0);
  });

  it("stop cancels a pending fill; the gap stays in the cursor and fills with the next one", async () => {
    const t = setup({ graceMs: 0 });
    t.f.message(K, 5, 1);
    await vi.advanceTimersByTimeAsync(0);
    t.f.message(K, 9, undefined);
    t.f.stop();
    await vi.advanceTimersByTimeAsync(5000);
    expect(t.f.missing(K)).toBe(3);
    expect(t.f.cursor(K, 9)).toBe(5);
    t.f.message(K, 11, undefined);
    await vi.advanceTimersByTimeAsync(0);
    expect(t.f.missing(K)).toBe(0);
    expect(t.seqs()).toEqual([2, 3, 4, 6, 7, 8, 10]);
  });
});
