import { describe, expect, it } from "vitest";
import { TokenBucket, TypingThrottle, typingText } from "./typing";

describe("typingText", () => {
  it.each([
    [[], ""],
    [["ann"], "ann is typing…"],
    [["ann", "bob"], "ann, bob are typing…"],
    [["ann", "bob", "cid"], "ann, bob, cid are typing…"],
    [["ann", "bob", "cid", "dee"], "ann, bob, cid and 1 other are typing…"],
    [["a1", "a2", "a3", "a4", "a5"], "a1, a2, a3 and 2 others are typing…"],
  ])("%j → %s", (names, want) => {
    expect(typingText(names)).toBe(want);
  });
});

function fakeClock() {
  let now = 0;
  let next = 1;
  const timers = new Map<number, { at: number; fn: () => void }>();
  return {
    now: () => now,
    setTimer: (fn: () => void, ms: number) => {
      const id = next++;
      timers.set(id, { at: now + ms, fn });
      return id;
    },
    clearTimer: (id: unknown) => void timers.delete(id as number),
    advance(ms: number) {
      const end = now + ms;
      for (;;) {
        const due = [...timers.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
        if (!due) break;
        timers.delete(due[0]);
        now = due[1].at;
        due[1].fn();
      }
      now = end;
    },
  };
}

describe("TypingThrottle", () => {
  it("sends one start, repeats while typing, and stops when idle", () => {
    const clock = fakeClock();
    const sent: boolean[] = [];
    const t = new TypingThrottle((s) => void sent.push(s.typing), { repeatMs: 3000, idleMs: 2000, ...clock });
    t.keystroke();
    clock.advance(500);
    t.keystroke();
    clock.advance(500);
    t.keystroke();
    expect(sent).toEqual([true]);
    // Keep typing past the repeat interval: one more start.
    for (let i = 0; i < 6; i++) {
      clock.advance(500);
      t.keystroke();
    }
    expect(sent).toEqual([true, true]);
    clock.advance(2000);
    expect(sent).toEqual([true, true, false]);
    clock.advance(10000);
    expect(sent).toEqual([true, true, false]);
  });

  it("stops on demand only when a start is outstanding", () => {
    const clock = fakeClock();
    const sent: boolean[] = [];
    const t = new TypingThrottle((s) => void sent.push(s.typing), clock);
    t.stop();
    expect(sent).toEqual([]);
    t.keystroke();
    t.stop();
    t.stop();
    expect(sent).toEqual([true, false]);
    clock.advance(10000);
    expect(sent).toEqual([true, false]);
  });
});

describe("TokenBucket with TypingThrottle", () => {
  it("drops starts over budget and sends no stop for them", () => {
    const clock = fakeClock();
    const bucket = new TokenBucket(1, 2, clock.now);
    const sent: boolean[] = [];
    const mk = () =>
      new TypingThrottle(
        (s) => {
          if (s.typing && !bucket.tryTake()) return false;
          if (!s.typing) bucket.take();
          sent.push(s.typing);
        },
        clock,
      );
    const a = mk();
    a.keystroke(); // start (1 token left)
    a.stop(); // stop (0 left)
    a.keystroke(); // dropped
    a.stop(); // nothing outstanding
    expect(sent).toEqual([true, false]);
    clock.advance(1000); // one token back
    a.keystroke();
    expect(sent).toEqual([true, false, true]);
  });

  it("retries a dropped start while the user is still typing", () => {
    const clock = fakeClock();
    const bucket = new TokenBucket(1, 1, clock.now);
    const sent: boolean[] = [];
    const t = new TypingThrottle(
      (s) => {
        if (s.typing && !bucket.tryTake()) return false;
        if (!s.typing) bucket.take();
        sent.push(s.typing);
      },
      { idleMs: 2500, ...clock },
    );
    bucket.tryTake(); // empty the bucket
    t.keystroke(); // dropped; a retry is scheduled
    expect(sent).toEqual([]);
    clock.advance(1000); // a token is back and the retry fires
    expect(sent).toEqual([true]);
    clock.advance(2000); // idle: stop
    expect(sent).toEqual([true, false]);
  });
});
