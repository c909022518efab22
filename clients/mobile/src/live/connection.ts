// LiveConnection owns the /ws stream (one WebSocket = one Chat.Connect): it
// opens it with the access token in the Sec-WebSocket-Protocol header
// ("parley.v1, bearer.<JWT>", never in the URL), speaks binary protobuf
// frames, reconnects with exponential backoff and jitter, resumes every
// conversation from the last sequence seen, re-sends messages that were not
// acknowledged (the same client_msg_id, so the server answers duplicate=true
// instead of storing them twice), forwards refreshed access tokens in band,
// and watches for a silent stream with application pings.
//
// It runs on the JS thread; callbacks are invoked synchronously from socket
// events. The WebSocket implementation is injectable (React Native's global
// WebSocket by default; tests pass the `ws` package).

import type { MessageInitShape } from "@bufbuild/protobuf";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { NoticeKind } from "../../../shared/src/gen/chat/v1/chat_pb";
import type { ClientEventSchema, ServerEvent } from "../../../shared/src/gen/chat/v1/chat_pb";
import { backoffDelay, type BackoffOptions } from "../../../shared/src/live/backoff";
import { closeAction, closeDetail, decodeServerEvent, encodeClientEvent, helloFrame, protocolsFor } from "./frames";

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

/** WebSocketLike is the part of the WebSocket API the connection uses. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: ArrayBuffer): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

/** WebSocketFactory opens a socket. */
export type WebSocketFactory = (url: string, protocols: string[]) => WebSocketLike;

/** globalWebSocket uses the runtime's WebSocket (React Native's, or one a test installed). */
export const globalWebSocket: WebSocketFactory = (url, protocols) => {
  const Ctor = (globalThis as unknown as { WebSocket: new (u: string, p: string[]) => WebSocketLike }).WebSocket;
  return new Ctor(url, protocols);
};

export interface LiveOptions {
  /** url is the /ws endpoint (ws:// or wss://). */
  url: string;
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
  webSocket?: WebSocketFactory;
}

interface Outgoing {
  requestId: string;
  ev: ClientEventInit;
  /** durable sends are re-sent after a reconnect until answered. */
  durable: boolean;
}

let reqCounter = 0;

/** newRequestId returns a request id unique within this app run. */
export function newRequestId(prefix = "r"): string {
  reqCounter += 1;
  return `${prefix}${Date.now().toString(36)}${reqCounter.toString(36)}`;
}

const OPEN = 1;

export class LiveConnection {
  private ws: WebSocketLike | null = null;
  private phase: Phase = "connecting";
  private attempt = 0;
  private stopped = false;
  private connectedOnce = false;
  private ready = false;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private lastHeard = 0;
  private generation = 0;
  private unacked = new Map<string, Outgoing>();
  private queue: Outgoing[] = [];
  private noReconnect: string | null = null;
  private shutdownHint: number | undefined;
  private shutdownNotice: string | undefined;
  /** reconnects counts Welcomes after the first one. */
  reconnects = 0;

  constructor(private readonly opts: LiveOptions) {}

  /** start opens the stream (once; later calls do nothing). */
  start(): void {
    if (this.ws || this.retryTimer) return;
    this.stopped = false;
    void this.open();
  }

  /** stop closes the stream and stops reconnecting. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.teardown(1000, "client stopped");
    this.setStatus({ phase: "stopped", attempt: 0 });
  }

  /** reconnectNow skips the backoff wait (e.g. the user tapped Reconnect). */
  reconnectNow(): void {
    this.noReconnect = null;
    this.stopped = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.teardown(1000, "reconnecting");
    void this.open();
  }

  /**
   * send queues one command and returns its request id. Durable commands
   * (messages, files, joins) survive reconnects until answered; others
   * (typing, pings) are dropped while disconnected.
   */
  send(ev: ClientEventInit, opts: { durable?: boolean; requestId?: string } = {}): string {
    const out: Outgoing = { requestId: opts.requestId ?? newRequestId(), ev, durable: opts.durable ?? false };
    if (out.durable) this.unacked.set(out.requestId, out);
    if (this.ready) this.write(out);
    else if (out.durable) this.queue.push(out);
    return out.requestId;
  }

  /** refreshToken hands a new access token to the live stream. */
  refreshToken(accessToken: string): void {
    if (this.ready) this.write({ requestId: newRequestId("t"), ev: { event: { case: "refreshToken", value: { accessToken } } }, durable: false });
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
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN) return; // the close handler reconnects and re-sends
    try {
      ws.send(encodeClientEvent({ ...out.ev, requestId: out.requestId } as MessageInitShape<typeof ClientEventSchema>));
    } catch {
      // The socket is gone; the close handler reconnects and re-sends.
    }
  }

  private async open(): Promise<void> {
    const gen = ++this.generation;
    this.ready = false;
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

    let ws: WebSocketLike;
    try {
      ws = (this.opts.webSocket ?? globalWebSocket)(this.opts.url, protocolsFor(token));
    } catch (err) {
      this.fail(`cannot open a socket: ${(err as Error).message}`, 0);
      return;
    }
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      if (gen !== this.generation) return;
      this.lastHeard = Date.now();
      try {
        ws.send(helloFrame());
      } catch {
        // onclose follows.
      }
    };
    ws.onmessage = (e) => {
      if (gen !== this.generation) return;
      this.lastHeard = Date.now();
      let ev: ServerEvent | null;
      try {
        ev = decodeServerEvent(e.data);
      } catch {
        return; // a frame we cannot decode: skip it, the stream goes on
      }
      if (ev) this.handle(ev);
    };
    ws.onerror = () => {
      // onclose always follows with the code.
    };
    ws.onclose = (e) => {
      if (gen !== this.generation) return;
      this.onClosed(e?.code ?? 1006, e?.reason ?? "");
    };
    this.lastHeard = Date.now();
    this.startPings(gen);
  }

  private onClosed(code: number, reason: string): void {
    this.ws = null;
    this.ready = false;
    this.stopPings();
    if (this.stopped) return;
    if (this.noReconnect !== null) {
      this.setStatus({ phase: "stopped", attempt: 0, detail: this.noReconnect });
      return;
    }
    const detail = this.shutdownNotice ?? closeDetail(code, reason);
    const action = closeAction(code, reason);
    if (action.kind === "stop") {
      this.setStatus({ phase: "stopped", attempt: 0, detail: action.reason });
      if (code === 4403) this.opts.onAuthLost?.(action.reason);
      return;
    }
    if (action.kind === "auth") {
      // The token may have expired while we were away: refresh, then retry
      // at once the first time and with backoff after that.
      const first = this.attempt === 0;
      this.opts
        .token(true)
        .then(() => this.fail(detail, first ? -1 : 0))
        .catch((err: Error) => {
          this.setStatus({ phase: "stopped", attempt: 0, detail: `signed out: ${err.message}` });
          this.opts.onAuthLost?.(err.message);
        });
      return;
    }
    const hint = this.shutdownHint;
    this.shutdownHint = undefined;
    this.shutdownNotice = undefined;
    this.fail(detail, Math.max(action.minDelayMs, hint ?? 0));
  }

  /** fail schedules a reconnect: minDelay -1 means at once, else at least minDelay. */
  private fail(detail: string, minDelay: number): void {
    this.teardown(1000, "reconnecting");
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

  private teardown(code: number, reason: string): void {
    this.generation += 1;
    this.stopPings();
    this.ready = false;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try {
        ws.close(code, reason);
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
          this.write({ requestId: newRequestId("resume"), ev: { event: { case: "resume", value: { cursors } } }, durable: false });
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
    if (e.case === "serverNotice") {
      const n = e.value;
      const hint = n.reconnectAfter ? durationMs(n.reconnectAfter) : undefined;
      if (n.kind === NoticeKind.DISCONNECTED && hint === undefined) {
        this.noReconnect = n.message || "disconnected by the server";
      } else if (n.kind === NoticeKind.SHUTDOWN) {
        this.shutdownHint = hint;
        this.shutdownNotice = n.message || "server shutting down";
      }
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
      if (this.ready) this.write({ requestId: newRequestId("qp"), ev: { event: { case: "ping", value: {} } }, durable: false });
    }, every);
  }

  private stopPings(): void {
    clearInterval(this.pingTimer);
    this.pingTimer = undefined;
  }
}
