/**
 * typingText renders who is typing: "" for nobody, "ann is typing…",
 * "ann, bob are typing…", and for more than three "ann, bob, cid and 2 others
 * are typing…". Names are shown in the order given.
 */
export function typingText(names: readonly string[]): string {
  if (names.length === 0) return "";
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length <= 3) return `${names.join(", ")} are typing…`;
  const rest = names.length - 3;
  return `${names.slice(0, 3).join(", ")} and ${rest} other${rest === 1 ? "" : "s"} are typing…`;
}

/** TypingSignal is what TypingThrottle asks its sender to transmit. */
export type TypingSignal = { typing: boolean };

/**
 * TypingSender transmits a signal. Returning false for a start means it was
 * not sent (out of budget): the throttle then sends no stop for it and
 * tries again on the next keystroke.
 */
export type TypingSender = (s: TypingSignal) => boolean | void;

/**
 * TokenBucket is a small client-side rate limiter, kept below the server's
 * typing limit so the server never has to refuse an indicator.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;
  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = burst;
    this.last = now();
  }
  private refill() {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) / 1000) * this.perSecond);
    this.last = t;
  }
  /** tryTake takes a token if one is available. */
  tryTake(): boolean {
    this.refill();
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
  /** take takes a token even if that leaves the bucket in debt. */
  take(): void {
    this.refill();
    this.tokens -= 1;
  }
}

/**
 * TypingThrottle turns keystrokes into few typing start/stop events: a start
 * on the first keystroke and again at most every `repeatMs` while typing
 * continues (the server expires a start after a few seconds), and a stop
 * after `idleMs` without keystrokes, on send, or on leaving the
 * conversation. Time and timers are injected so tests can drive it.
 */
export class TypingThrottle {
  private typing = false;
  private lastStart = 0;
  private idleTimer: unknown = undefined;
  private retryTimer: unknown = undefined;

  constructor(
    private readonly send: TypingSender,
    private readonly opts: {
      repeatMs?: number;
      idleMs?: number;
      now?: () => number;
      setTimer?: (fn: () => void, ms: number) => unknown;
      clearTimer?: (t: unknown) => void;
    } = {},
  ) {}

  private get repeatMs() {
    return this.opts.repeatMs ?? 3_000;
  }
  private get idleMs() {
    return this.opts.idleMs ?? 2_500;
  }
  private now() {
    return (this.opts.now ?? Date.now)();
  }
  private setTimer(fn: () => void, ms: number) {
    return (this.opts.setTimer ?? ((f, m) => setTimeout(f, m)))(fn, ms);
  }
  private clearTimer(t: unknown) {
    (this.opts.clearTimer ?? ((x) => clearTimeout(x as ReturnType<typeof setTimeout>)))(t);
  }

  /** keystroke records input activity. */
  keystroke(): void {
    this.tryStart();
    if (this.idleTimer !== undefined) this.clearTimer(this.idleTimer);
    this.idleTimer = this.setTimer(() => this.stop(), this.idleMs);
  }

  private tryStart(): void {
    const now = this.now();
    if (this.typing && now - this.lastStart < this.repeatMs) return;
    if (this.send({ typing: true }) !== false) {
      this.typing = true;
      this.lastStart = now;
    } else if (this.retryTimer === undefined) {
      // Out of budget: try again shortly while the user is still typing.
      this.retryTimer = this.setTimer(() => {
        this.retryTimer = undefined;
        if (this.idleTimer !== undefined) this.tryStart();
      }, 500);
    }
  }

  /** stop sends a stop if a start is outstanding. */
  stop(): void {
    if (this.retryTimer !== undefined) {
      this.clearTimer(this.retryTimer);
      this.retryTimer = undefined;
    }
    if (this.idleTimer !== undefined) {
      this.clearTimer(this.idleTimer);
      this.idleTimer = undefined;
    }
    if (this.typing) {
      this.typing = false;
      this.send({ typing: false });
    }
  }
}
