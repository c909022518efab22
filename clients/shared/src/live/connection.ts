// LiveConnection owns one Chat.Connect stream for an app, whatever carries
// it: the app injects a Transport (the web app gRPC-Web over improbable's
// websocket transport, the mobile app /ws binary frames). It reconnects with
// exponential backoff and jitter, resumes every conversation from the last
// sequence seen, re-sends commands that were not answered (the same
// request and client_msg_id, so the server answers duplicate=true instead of
// storing a message twice), forwards refreshed access tokens in band, watches
// for a silent stream with application pings, and decides whether to
// reconnect by the one rule in ./disconnect. Every command but its
// keepalive pings carries a W3C traceparent of its own (./traceparent), the
// same on every re-send, so the server's spans for it join one trace.
//
// It runs on the JS thread; callbacks are invoked synchronously from
// transport events. Not safe for use from several threads (there are none).

import type { MessageInitShape } from "@bufbuild/protobuf";
import { NoticeKind } from "../gen/chat/v1/chat_pb";
import type { ClientEventSchema, Disconnect, ServerEvent } from "../gen/chat/v1/chat_pb";
import { backoffDelay, type BackoffOptions } from "./backoff";
import { decide } from "./disconnect";
import { newTraceParent } from "./traceparent";

/** ClientEventInit is a ClientEvent to send, without its request id. */
export type ClientEventInit = Omit<MessageInitShape<typeof ClientEventSchema>, "requestId">;

/** CursorInit is the resume cursors, in wire form. */
export type CursorInit = NonNullable<Extract<NonNullable<ClientEventInit["event"]>, { case: "resume" }>["value"]>["cursors"];

export type Phase = "connecting" | "connected" | "reconnecting" | "stopped";

/** StatusUpdate reports the connection's state to the UI. */
export interface StatusUpdate {
  phase: Phase;
  attempt: number;
  retryAt?: number;
  detail?: string;
}

/** StreamEnd is how a transport's stream ended. */
export interface StreamEnd {
  /**
   * code is the Disconnect table's code (chat.proto): a /ws close code as
   * received, a gRPC status through codeForStatus, 1006 for a connection
   * that dropped with neither.
   */
  code: number;
  /** reason is the server's text (close reason, status message), maybe empty. */
  reason: string;
  /** detail says why the stream ended, for people. */
  detail: string;
}

/** StreamHandlers receive what one stream delivers. */
export interface StreamHandlers {
  /** onEvent receives each server event in order. */
  onEvent(ev: ServerEvent): void;
  /** onEnd is called once, when the stream ended by itself (not after close). */
  onEnd(end: StreamEnd): void;
}

/** Stream is one open Chat.Connect stream of a transport. */
export interface Stream {
  /** send writes one event; it may drop it or throw when the stream is gone (onEnd follows). */
  send(ev: MessageInitShape<typeof ClientEventSchema>): void;
  /** close ends the stream from this side; no handler is called after it. */
  close(): void;
}

/**
 * Transport opens a stream authenticated with accessToken. It may throw;
 * the connection then retries with backoff.
 */
export type Transport = (accessToken: string, handlers: StreamHandlers) => Stream;

export interface LiveOptions {
  transport: Transport;
  /** token returns an access token; force asks for a fresh one. */
  token: (force: boolean) => Promise<string>;
  /** onEvent receives every server event in order. */
  onEvent: (ev: ServerEvent) => void;
  onStatus: (s: StatusUpdate) => void;
  /** cursors returns where each conversation should resume from. */
  cursors: () => CursorInit;
  /** onAuthLost is called when the server refuses the session for good. */
  onAuthLost?: (reason: string) => void;
  backoff?: BackoffOptions;
  /** pingMs is the interval of application pings; default 20000. */
  pingMs?: number;
  /** silenceMs restarts a stream that delivered nothing for this long; default 50000. */
  silenceMs?: number;
}

interface Outgoing {
  requestId: string;
  ev: ClientEventInit;
  /** durable sends are re-sent after a reconnect until answered. */
  durable: boolean;
}

/**
 * command is an Outgoing with its own trace context: the caller's when ev
 * has one, else a new traceparent.
 */
function command(requestId: string, ev: ClientEventInit, durable: boolean): Outgoing {
  return { requestId, ev: ev.traceParent ? ev : { ...ev, traceParent: newTraceParent() }, durable };
}

let reqCounter = 0;

/** newRequestId returns a request id unique within this app run. */
export function newRequestId(prefix = "r"): string {
  reqCounter += 1;
  return `${prefix}${Date.now().toString(36)}${reqCounter.toString(36)}`;
}

export class LiveConnection {
  private stream: Stream | null = null;
  private phase: Phase = "connecting";
  private attempt = 0;
  private stopped = false;
  private connectedOnce = false;
  private ready = false;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private lastHeard = 0;
  private generation = 0;
  /** unacked holds durable sends by request id until answered. */
  private unacked = new Map<string, Outgoing>();
  /** queue holds durable sends issued while the stream is not ready. */
  private queue: Outgoing[] = [];
  /** disconnect is the current stream's Disconnect event, if one came. */
  private disconnect: Disconnect | undefined;
  /** notice is the text of the current stream's last disconnect or shutdown notice (display only). */
  private notice: string | undefined;
  /** reconnects counts Welcomes after the first one. */
  reconnects = 0;

  constructor(private readonly opts: LiveOptions) {}

  /** start opens the stream (once; later calls do nothing). */
  start(): void {
    if (this.stream || this.retryTimer) return;
    this.stopped = false;
    void this.open();
  }

  /** stop closes the stream and stops reconnecting. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.teardown();
    this.setStatus({ phase: "stopped", attempt: 0 });
  }

  /** reconnectNow skips the backoff wait (e.g. the user asked to reconnect). */
  reconnectNow(): void {
    this.stopped = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.teardown();
    void this.open();
  }

  /**
   * send queues one command and returns its request id. Durable commands
   * (messages, files, joins) survive reconnects until answered; others
   * (typing, pings) are dropped while disconnected. Each command gets a new
   * traceparent unless ev carries one; a re-send keeps it.
   */
  send(ev: ClientEventInit, opts: { durable?: boolean; requestId?: string } = {}): string {
    const out = command(opts.requestId ?? newRequestId(), ev, opts.durable ?? false);
    if (out.durable) this.unacked.set(out.requestId, out);
    if (this.ready) this.write(out);
    else if (out.durable) this.queue.push(out);
    return out.requestId;
  }

  /** refreshToken hands a new access token to the live stream. */
  refreshToken(accessToken: string): void {
    if (this.ready) this.write(command(newRequestId("t"), { event: { case: "refreshToken", value: { accessToken } } }, false));
  }

  /** currentPhase is the last reported phase. */
  get currentPhase(): Phase {
    return this.phase;
  }

  private setStatus(s: StatusUpdate): void {
    this.phase = s.phase;
    this.opts.onStatus(s);
  }

  private write(out: Outgoing): void {
    try {
      this.stream?.send({ ...out.ev, requestId: out.requestId } as MessageInitShape<typeof ClientEventSchema>);
    } catch {
      // The stream is gone; its end reconnects and re-sends.
    }
  }

  private async open(): Promise<void> {
    const gen = ++this.generation;
    this.ready = false;
    this.disconnect = undefined;
    this.notice = undefined;
    this.setStatus({ phase: this.connectedOnce ? "reconnecting" : "connecting", attempt: this.attempt });
    let token: string;
    try {
      token = await this.opts.token(false);
    } catch (err) {
      if (gen !== this.generation || this.stopped) return;
      this.fail(`cannot get a token: ${(err as Error).message}`, 0);
      return;
    }
    if (gen !== this.generation || this.stopped) return;

    this.lastHeard = Date.now();
    let stream: Stream;
    try {
      stream = this.opts.transport(token, {
        onEvent: (ev) => {
          if (gen !== this.generation) return;
          this.lastHeard = Date.now();
          this.handle(ev);
        },
        onEnd: (end) => {
          if (gen !== this.generation) return;
          this.ended(end);
        },
      });
    } catch (err) {
      if (gen !== this.generation) return;
      this.fail(`cannot open a stream: ${(err as Error).message}`, 0);
      return;
    }
    // A transport may end the stream synchronously, inside open: then the
    // end already scheduled what comes next, and this stream is dead.
    if (gen !== this.generation) return;
    this.stream = stream;
    this.startPings(gen);
  }

  /** ended applies the reconnect rule to a stream that ended by itself. */
  private ended(end: StreamEnd): void {
    this.stream = null;
    this.ready = false;
    this.stopPings();
    if (this.stopped) return;
    const d = decide(this.disconnect, end.code, end.reason);
    const detail = (this.disconnect?.reason || undefined) ?? this.notice ?? end.detail;
    if (!d.reconnect) {
      this.teardown();
      this.setStatus({ phase: "stopped", attempt: 0, detail });
      if (d.authLost) this.opts.onAuthLost?.(detail);
      return;
    }
    if (d.newToken) {
      // The token may have expired while we were away: get a new one, then
      // retry at once the first time (unless the server set a least wait)
      // and with backoff after that, so a server that keeps refusing is not
      // hammered.
      const first = this.attempt === 0 && d.minDelayMs === 0;
      const gen = ++this.generation;
      this.opts
        .token(true)
        .then(() => {
          if (gen !== this.generation || this.stopped) return;
          this.fail(detail, first ? -1 : d.minDelayMs);
        })
        .catch((err: Error) => {
          if (gen !== this.generation || this.stopped) return;
          this.setStatus({ phase: "stopped", attempt: 0, detail: `signed out: ${err.message}` });
          this.opts.onAuthLost?.(err.message);
        });
      return;
    }
    this.fail(detail, d.minDelayMs);
  }

  /** fail schedules a reconnect: minDelay -1 means at once, else at least minDelay. */
  private fail(detail: string, minDelay: number): void {
    this.teardown();
    if (this.stopped) return;
    this.attempt += 1;
    const wait = minDelay < 0 ? 0 : Math.max(backoffDelay(this.attempt, this.opts.backoff), minDelay);
    const retryAt = Date.now() + wait;
    this.setStatus({ phase: this.connectedOnce ? "reconnecting" : "connecting", attempt: this.attempt, retryAt, detail });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.open();
    }, wait);
  }

  private teardown(): void {
    this.generation += 1;
    this.stopPings();
    this.ready = false;
    const s = this.stream;
    this.stream = null;
    if (s) {
      try {
        s.close();
      } catch {
        // Already closed.
      }
    }
  }

  private handle(ev: ServerEvent): void {
    const e = ev.event;
    if (e.case === "welcome") {
      const wasReconnect = this.connectedOnce;
      this.connectedOnce = true;
      if (wasReconnect) this.reconnects += 1;
      this.attempt = 0;
      this.ready = true;
      this.setStatus({ phase: "connected", attempt: 0 });
      this.opts.onEvent(ev);
      if (wasReconnect) {
        const cursors = this.opts.cursors();
        if (cursors && cursors.length > 0) {
          this.write(command(newRequestId("resume"), { event: { case: "resume", value: { cursors } } }, false));
        }
      }
      // Re-send what was not answered, then what was queued, in order.
      const seen = new Set<string>();
      for (const out of [...this.unacked.values(), ...this.queue]) {
        if (seen.has(out.requestId)) continue;
        seen.add(out.requestId);
        this.write(out);
      }
      this.queue = [];
      return;
    }
    if (ev.requestId && (e.case === "ack" || e.case === "error" || e.case === "roomJoined" || e.case === "roomLeft")) {
      this.unacked.delete(ev.requestId);
    }
    if (e.case === "disconnect") {
      this.disconnect = e.value;
    } else if (e.case === "serverNotice" && (e.value.kind === NoticeKind.DISCONNECTED || e.value.kind === NoticeKind.SHUTDOWN)) {
      // Only words for the status line: the rule reads Disconnect or the code.
      this.notice = e.value.message || (e.value.kind === NoticeKind.SHUTDOWN ? "server shutting down" : "disconnected by the server");
    }
    this.opts.onEvent(ev);
  }

  private startPings(gen: number): void {
    this.stopPings();
    const every = this.opts.pingMs ?? 20_000;
    const silence = this.opts.silenceMs ?? 50_000;
    this.pingTimer = setInterval(() => {
      if (gen !== this.generation) return;
      if (Date.now() - this.lastHeard > silence) {
        this.fail("no data from server", 0);
        return;
      }
      // No trace context: a keepalive every pingMs per client is not worth
      // a trace each.
      if (this.ready) this.write({ requestId: newRequestId("qp"), ev: { event: { case: "ping", value: {} } }, durable: false });
    }, every);
  }

  private stopPings(): void {
    clearInterval(this.pingTimer);
    this.pingTimer = undefined;
  }
}
