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

  constructor(
    private readonly send: (s: TypingSignal) => void,
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
    const now = this.now();
    if (!this.typing || now - this.lastStart >= this.repeatMs) {
      this.typing = true;
      this.lastStart = now;
      this.send({ typing: true });
    }
    if (this.idleTimer !== undefined) this.clearTimer(this.idleTimer);
    this.idleTimer = this.setTimer(() => this.stop(), this.idleMs);
  }

  /** stop sends a stop if a start is outstanding. */
  stop(): void {
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
