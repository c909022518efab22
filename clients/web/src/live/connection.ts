// LiveConnection owns the Chat.Connect stream: it opens it over improbable's
// websocket transport with `authorization: Bearer` in the header frame (never
// in the URL), reconnects with exponential backoff and jitter, resumes every
// conversation from the last sequence seen, re-sends messages that were not
// acknowledged (the same client_msg_id, so the server answers duplicate=true
// instead of storing them twice), forwards refreshed access tokens in band,
// and watches for a silent stream with application pings.
//
// It runs on the browser's single thread; callbacks are invoked
// synchronously from transport events.

import { grpc } from "@improbable-eng/grpc-web";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { Chat, ClientEventSchema, NoticeKind, ServerEventSchema } from "../../../shared/src/gen/chat/v1/chat_pb";
import type { ServerEvent } from "../../../shared/src/gen/chat/v1/chat_pb";
import { methodDefinition, wire, type Wire } from "../rpc/adapter";
import { apiHost, codeName } from "../rpc/client";
import { backoffDelay, type BackoffOptions } from "../../../shared/src/live/backoff";

const connectDef = methodDefinition(Chat.method.connect);

/** ClientEventInit is a ClientEvent to send, without its request id. */
export type ClientEventInit = Omit<MessageInitShape<typeof ClientEventSchema>, "requestId">;

/** Cursor is a conversation's resume point, in wire form. */
export type CursorInit = NonNullable<
  Extract<NonNullable<ClientEventInit["event"]>, { case: "resume" }>["value"]
>["cursors"];

export type Phase = "connecting" | "connected" | "reconnecting" | "stopped";

/** StatusUpdate reports the connection's state to the UI. */
export interface StatusUpdate {
  phase: Phase;
  attempt: number;
  retryAt?: number;
  detail?: string;
}

export interface LiveOptions {
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
  /** host overrides the bridge origin (default: the page's origin). */
  host?: string;
  /** transport overrides improbable's WebSocket transport (tests only). */
  transport?: grpc.TransportFactory;
}

interface Outgoing {
  requestId: string;
  ev: ClientEventInit;
  /** durable sends are re-sent after a reconnect until acknowledged. */
  durable: boolean;
}

let reqCounter = 0;

/** newRequestId returns a request id unique within this page. */
export function newRequestId(prefix = "r"): string {
  reqCounter += 1;
  return `${prefix}${Date.now().toString(36)}${reqCounter.toString(36)}`;
}

export class LiveConnection {
  private client: grpc.Client<Wire<typeof ClientEventSchema>, Wire<typeof ServerEventSchema>> | null = null;
  private phase: Phase = "connecting";
  private attempt = 0;
  private stopped = false;
  private connectedOnce = false;
  private ready = false;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private lastHeard = 0;
  private generation = 0;
  /** unacked holds durable sends by request id until Ack or Error. */
  private unacked = new Map<string, Outgoing>();
  /** queue holds sends issued while the stream is not ready. */
  private queue: Outgoing[] = [];
  private noReconnect: string | null = null;

  constructor(private readonly opts: LiveOptions) {}

  /** start opens the stream (once; later calls do nothing). */
  start(): void {
    if (this.client || this.retryTimer) return;
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

  /** reconnectNow skips the backoff wait (e.g. the user clicked Reconnect). */
  reconnectNow(): void {
    this.noReconnect = null;
    this.stopped = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.teardown();
    void this.open();
  }

  /**
   * send queues one command and returns its request id. Durable commands
   * (messages, files, joins) survive reconnects until acknowledged; others
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

  private setStatus(s: StatusUpdate): void {
    this.phase = s.phase;
    this.opts.onStatus(s);
  }

  private write(out: Outgoing): void {
    try {
      this.client?.send(wire(ClientEventSchema, { ...out.ev, requestId: out.requestId } as MessageInitShape<typeof ClientEventSchema>));
    } catch {
      // The transport is gone; the end handler reconnects and re-sends.
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
      this.fail(`cannot get a token: ${(err as Error).message}`, false);
      return;
    }
    if (gen !== this.generation || this.stopped) return;

    const client = grpc.client<Wire<typeof ClientEventSchema>, Wire<typeof ServerEventSchema>, typeof connectDef>(connectDef, {
      host: this.opts.host ?? apiHost(),
      transport: this.opts.transport ?? grpc.WebsocketTransport(),
    });
    this.client = client;
    client.onMessage((msg) => {
      if (gen !== this.generation) return;
      this.lastHeard = Date.now();
      this.handle(msg.message);
    });
    client.onEnd((code, message) => {
      if (gen !== this.generation) return;
      this.client = null;
      this.ready = false;
      this.stopPings();
      if (this.stopped) return;
      if (this.noReconnect !== null) {
        this.setStatus({ phase: "stopped", attempt: 0, detail: this.noReconnect });
        return;
      }
      const detail = this.shutdownNotice ?? endDetail(code, message);
      if (code === grpc.Code.Unauthenticated) {
        // The token may have expired while we were away: refresh, then
        // retry at once the first time and with backoff after that, so a
        // server that keeps refusing is not hammered.
        const first = this.attempt === 0;
        this.opts
          .token(true)
          .then(() => this.fail(detail, first))
          .catch((err: Error) => {
            this.setStatus({ phase: "stopped", attempt: 0, detail: `signed out: ${err.message}` });
            this.opts.onAuthLost?.(err.message);
          });
        return;
      }
      if (code === grpc.Code.PermissionDenied) {
        this.setStatus({ phase: "stopped", attempt: 0, detail });
        this.opts.onAuthLost?.(detail);
        return;
      }
      const hint = this.shutdownHint;
      this.shutdownHint = undefined;
      this.shutdownNotice = undefined;
      this.fail(detail, false, hint);
    });
    const md = new grpc.Metadata();
    md.set("authorization", `Bearer ${token}`);
    this.lastHeard = Date.now();
    client.start(md);
    this.startPings(gen);
  }

  private fail(detail: string, immediate: boolean, hintMs?: number): void {
    this.teardown();
    if (this.stopped) return;
    this.attempt += 1;
    const backoff = backoffDelay(this.attempt, this.opts.backoff);
    const wait = immediate ? 0 : Math.max(backoff, hintMs ?? 0);
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
    const c = this.client;
    this.client = null;
    if (c) {
      try {
        c.close();
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
      // Re-send what was not acknowledged, then what was queued, in order.
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

  private shutdownHint: number | undefined;
  private shutdownNotice: string | undefined;

  private startPings(gen: number): void {
    this.stopPings();
    const every = this.opts.pingMs ?? 20_000;
    const silence = this.opts.silenceMs ?? 50_000;
    this.pingTimer = setInterval(() => {
      if (gen !== this.generation) return;
      if (Date.now() - this.lastHeard > silence) {
        this.fail("no data from server", false);
        return;
      }
      if (this.ready) this.write({ requestId: newRequestId("qp"), ev: { event: { case: "ping", value: {} } }, durable: false });
    }, every);
  }

  private stopPings(): void {
    clearInterval(this.pingTimer);
    this.pingTimer = undefined;
  }

  /** currentPhase is the last reported phase. */
  get currentPhase(): Phase {
    return this.phase;
  }
}

/**
 * endDetail says why a stream ended, for people. improbable reports a socket
 * that closed without a gRPC status as Unknown/Internal "Response closed
 * without ..."; that is a lost connection, whatever the wording.
 */
export function endDetail(code: grpc.Code, message: string): string {
  if (code === grpc.Code.OK) return "stream closed";
  if ((code === grpc.Code.Unknown || code === grpc.Code.Internal) && message.startsWith("Response closed without")) {
    return "connection lost";
  }
  return `${codeName(code)}${message ? `: ${message}` : ""}`;
}
