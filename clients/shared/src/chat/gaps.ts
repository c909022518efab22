// GapFiller keeps each conversation's live messages gapless. A message's
// seq is per conversation, gapless and increasing, so a live message whose
// seq jumps past the cursor (the highest seq the client has) says that the
// ones in between were lost on the way (a dropped frame, a node that
// restarted) or are still coming (on a cluster another node's messages may
// arrive after this node's newer ones). The jumped message is shown at once;
// the seqs in between are recorded missing and, if they have not arrived
// after a short grace, fetched from history (GetHistory after_seq) and
// handed to the state, which sorts them in before the jumped one. A live
// message whose seq is at or below the cursor and not missing is a
// duplicate and is dropped.
//
// A fill that fails does not touch the connection. It is retried with
// backoff (attempts in all); when every attempt failed, the filler falls
// back to a Resume of that conversation from the last seq before the gap,
// over the live stream, whose replay fills it. Until some replay, fill or
// live message covered the gap, the conversation's resume cursor stays
// before it, so a reconnect's Resume replays it too.
//
// One GapFiller per live connection (see liveGaps in ./live); it runs on the
// JS thread only. At most one fetch per conversation is in flight.

import type { Message } from "../gen/chat/v1/chat_pb";
import { backoffDelay, type BackoffOptions } from "../live/backoff";
import { fromWire, type ChatMessage, type ConvKey } from "./model";

/** HistoryPage is what a GetHistory call answers (oldest first). */
export interface HistoryPage {
  messages: Message[];
  hasMore: boolean;
}

/** FetchAfter fetches up to limit messages of key with seq > afterSeq, oldest first. */
export type FetchAfter = (key: ConvKey, afterSeq: number, limit: number) => Promise<HistoryPage>;

export interface GapOptions {
  fetchAfter: FetchAfter;
  /** deliver hands fetched messages of key to the state. */
  deliver: (key: ConvKey, messages: ChatMessage[]) => void;
  /** resume asks the live stream to replay key after afterSeq (the fallback). */
  resume: (key: ConvKey, afterSeq: number) => void;
  /** graceMs is how long a gap may last before it is fetched; default 1000. */
  graceMs?: number;
  /** attempts is how many fetches a fill tries before it resumes instead; default 3. */
  attempts?: number;
  /** backoff spaces the retries of a failed fetch. */
  backoff?: BackoffOptions;
  /** maxFill is the most missing messages fetched per conversation; older ones are given up. Default 500. */
  maxFill?: number;
}

/** Verdict says what to do with a live message. */
export type Verdict = "deliver" | "duplicate";

/** PAGE is the most messages one GetHistory call returns. */
const PAGE = 100;

interface Range {
  from: number;
  to: number;
}

interface Track {
  /** high is the highest seq handed to the state. */
  high: number;
  /** missing lists the seqs below high not seen yet, as sorted disjoint ranges. */
  missing: Range[];
  /** timer is this conversation's pending grace wait or retry. */
  timer?: ReturnType<typeof setTimeout>;
  /** busy is set while a fetch is in flight. */
  busy: boolean;
  /** failures counts the failed fetches of the current fill. */
  failures: number;
}

export class GapFiller {
  private readonly tracks = new Map<ConvKey, Track>();
  /** generation changes on stop, so that fills begun before it end. */
  private generation = 0;

  constructor(private readonly opts: GapOptions) {}

  /**
   * message judges one live message of key and records any gap it opens.
   * known is the state's cursor for key, undefined when the state has none
   * (then no gap can be told). The state may lag behind the events (a React
   * state is read at the next render), so the cursor is the larger of it
   * and the highest seq this filler saw.
   */
  message(key: ConvKey, seq: number, known: number | undefined): Verdict {
    if (seq <= 0) return "deliver";
    let t = this.tracks.get(key);
    if (!t) {
      if (known === undefined) {
        this.tracks.set(key, newTrack(seq));
        return "deliver";
      }
      t = newTrack(known);
      this.tracks.set(key, t);
    }
    if (known !== undefined && known > t.high) t.high = known;
    if (seq <= t.high) return take(t, seq) ? "deliver" : "duplicate";
    if (seq > t.high + 1) {
      t.missing.push({ from: t.high + 1, to: seq - 1 });
      this.cap(t);
      this.schedule(key, t, this.opts.graceMs ?? 1000);
    }
    t.high = seq;
    return "deliver";
  }

  /**
   * seen records seqs the state got otherwise than live (a replay, a fill,
   * an ack of our own send): they are no longer missing. They open no gap:
   * a replay or a page is contiguous by itself.
   */
  seen(key: ConvKey, seqs: readonly number[]): void {
    let t = this.tracks.get(key);
    for (const seq of seqs) {
      if (seq <= 0) continue;
      if (!t) {
        t = newTrack(seq);
        this.tracks.set(key, t);
      }
      take(t, seq);
      if (seq > t.high) t.high = seq;
    }
  }

  /**
   * cursor is where key resumes from: before its oldest gap while one is
   * open, else the newest of the state's cursor and what this filler saw.
   */
  cursor(key: ConvKey, stateSeq: number): number {
    const t = this.tracks.get(key);
    if (!t) return stateSeq;
    return t.missing.length > 0 ? t.missing[0].from - 1 : Math.max(t.high, stateSeq);
  }

  /** keys lists the conversations this filler tracks. */
  keys(): ConvKey[] {
    return [...this.tracks.keys()];
  }

  /** missing counts the seqs of key still missing (for tests and diagnostics). */
  missing(key: ConvKey): number {
    return (this.tracks.get(key)?.missing ?? []).reduce((n, r) => n + r.to - r.from + 1, 0);
  }

  /**
   * stop cancels every pending fill; the results of fetches in flight are
   * dropped. What is missing stays recorded (and in the resume cursor), so
   * a connection started again fills it with its first new gap or replay.
   */
  stop(): void {
    this.generation += 1;
    for (const t of this.tracks.values()) {
      clearTimeout(t.timer);
      t.timer = undefined;
    }
  }

  /** cap gives up the oldest missing seqs beyond maxFill: the state keeps no more anyway. */
  private cap(t: Track): void {
    const max = this.opts.maxFill ?? 500;
    let n = 0;
    for (let i = t.missing.length - 1; i >= 0; i--) {
      const r = t.missing[i];
      const left = max - n;
      if (left <= 0) {
        t.missing.splice(0, i + 1);
        return;
      }
      if (r.to - r.from + 1 > left) {
        r.from = r.to - left + 1;
        t.missing.splice(0, i);
        return;
      }
      n += r.to - r.from + 1;
    }
  }

  private schedule(key: ConvKey, t: Track, ms: number): void {
    if (t.busy || t.timer !== undefined) return;
    t.timer = setTimeout(() => {
      t.timer = undefined;
      void this.fill(key, t);
    }, ms);
  }

  /** fill fetches key's oldest gap, page by page, until none is left or a fetch failed. */
  private async fill(key: ConvKey, t: Track): Promise<void> {
    const gen = this.generation;
    while (gen === this.generation && t.missing.length > 0) {
      // A copy: what arrives meanwhile changes the ranges.
      const { from, to } = t.missing[0];
      const after = from - 1;
      let page: HistoryPage;
      t.busy = true;
      try {
        page = await this.opts.fetchAfter(key, after, Math.min(PAGE, to - from + 1));
      } catch {
        t.busy = false;
        if (gen !== this.generation) return;
        t.failures += 1;
        if (t.failures < (this.opts.attempts ?? 3)) {
          this.schedule(key, t, backoffDelay(t.failures, this.opts.backoff));
        } else {
          // History keeps failing; the stream is up (or will resume from
          // before the gap when it comes back): ask it for a replay.
          t.failures = 0;
          this.opts.resume(key, after);
        }
        return;
      }
      t.busy = false;
      if (gen !== this.generation) return;
      t.failures = 0;
      const seqs = page.messages.map((m) => Number(m.seq));
      if (page.messages.length > 0) this.opts.deliver(key, page.messages.map(fromWire));
      this.seen(key, seqs);
      // The server answered everything it has after `after` up to the
      // page's end: a seq of this gap below that which it did not send does
      // not exist (or is not ours to read), so it is no longer awaited.
      // (At least from, so that a page of nothing new cannot loop.)
      const through = page.messages.length > 0 && page.hasMore ? Math.max(from, ...seqs) : to;
      drop(t, from, Math.min(through, to));
    }
  }
}

function newTrack(high: number): Track {
  return { high, missing: [], busy: false, failures: 0 };
}

/** take removes seq from t's missing ranges and reports whether it was missing. */
function take(t: Track, seq: number): boolean {
  for (let i = 0; i < t.missing.length; i++) {
    const r = t.missing[i];
    if (seq < r.from || seq > r.to) continue;
    if (r.from === r.to) t.missing.splice(i, 1);
    else if (seq === r.from) r.from += 1;
    else if (seq === r.to) r.to -= 1;
    else t.missing.splice(i, 1, { from: r.from, to: seq - 1 }, { from: seq + 1, to: r.to });
    return true;
  }
  return false;
}

/** drop removes the seqs from..to from t's missing ranges. */
function drop(t: Track, from: number, to: number): void {
  const out: Range[] = [];
  for (const r of t.missing) {
    if (r.to < from || r.from > to) {
      out.push(r);
      continue;
    }
    if (r.from < from) out.push({ from: r.from, to: from - 1 });
    if (r.to > to) out.push({ from: to + 1, to: r.to });
  }
  t.missing = out;
}
