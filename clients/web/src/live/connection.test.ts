import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { grpc } from "@improbable-eng/grpc-web";
import { ClientEventSchema, NoticeKind, ServerEventSchema, type ClientEvent, type ServerEvent } from "../../../shared/src/gen/chat/v1/chat_pb";
import { LiveConnection, endDetail, type StatusUpdate } from "./connection";

/** FakeStream plays the server side of one Connect stream. */
class FakeStream {
  metadata: grpc.Metadata | undefined;
  sent: ClientEvent[] = [];
  cancelled = false;
  constructor(readonly opts: grpc.TransportOptions) {}

  readonly transport: grpc.Transport = {
    start: (md) => {
      this.metadata = md;
      // Headers arrive with the server's first message.
      this.opts.onHeaders(new grpc.Metadata({ "content-type": "application/grpc-web+proto" }), 200);
    },
    sendMessage: (bytes) => {
      this.sent.push(fromBinary(ClientEventSchema, bytes.subarray(5)));
    },
    finishSend: () => {},
    cancel: () => {
      this.cancelled = true;
    },
  };

  emit(init: MessageInitShape<typeof ServerEventSchema>) {
    const body = toBinary(ServerEventSchema, create(ServerEventSchema, init));
    const frame = new Uint8Array(5 + body.length);
    new DataView(frame.buffer).setUint32(1, body.length);
    frame.set(body, 5);
    this.opts.onChunk(frame);
  }

  welcome() {
    this.emit({ event: { case: "welcome", value: { sessionId: "s", user: { username: "ann" } } } });
  }

  /** end finishes the stream with a gRPC status in the trailers. */
  end(code: grpc.Code, message = "") {
    const text = `grpc-status: ${code}\r\ngrpc-message: ${message}\r\n`;
    const body = new TextEncoder().encode(text);
    const frame = new Uint8Array(5 + body.length);
    frame[0] = 0x80;
    new DataView(frame.buffer).setUint32(1, body.length);
    frame.set(body, 5);
    this.opts.onChunk(frame);
    this.opts.onEnd();
  }

  kinds() {
    return this.sent.map((e) => e.event.case);
  }
}

function setup(overrides: Partial<ConstructorParameters<typeof LiveConnection>[0]> = {}) {
  const streams: FakeStream[] = [];
  const statuses: StatusUpdate[] = [];
  const events: ServerEvent[] = [];
  const tokenCalls: boolean[] = [];
  const live = new LiveConnection({
    host: "http://chat.test",
    transport: (opts) => {
      const s = new FakeStream(opts);
      streams.push(s);
      return s.transport;
    },
    token: async (force) => {
      tokenCalls.push(force);
      return force ? "tok2" : "tok1";
    },
    onEvent: (ev) => events.push(ev),
    onStatus: (s) => statuses.push(s),
    cursors: () => [{ conversation: { kind: { case: "room", value: "general" } }, lastSeq: 7n }],
    backoff: { initialMs: 100, random: () => 0 },
    ...overrides,
  });
  return { live, streams, statuses, events, tokenCalls, last: () => streams[streams.length - 1] };
}

const flush = () => vi.advanceTimersByTimeAsync(0);

describe("LiveConnection", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("sends the token in the header frame, never in the URL", async () => {
    const t = setup();
    t.live.start();
    await flush();
    expect(t.streams).toHaveLength(1);
    expect(t.last().opts.url).toBe("http://chat.test/chat.v1.Chat/Connect");
    expect(t.last().metadata?.get("authorization")).toEqual(["Bearer tok1"]);
    t.live.stop();
  });

  it("queues durable commands until Welcome and drops ephemeral ones", async () => {
    const t = setup();
    t.live.start();
    await flush();
    t.live.send({ event: { case: "typing", value: { conversation: { kind: { case: "room", value: "general" } }, typing: true } } });
    const id = t.live.send({ event: { case: "sendMessage", value: { room: "general", text: "hi", clientMsgId: "c1" } } }, { durable: true });
    expect(t.last().sent).toEqual([]);
    t.last().welcome();
    expect(t.statuses.at(-1)?.phase).toBe("connected");
    expect(t.last().kinds()).toEqual(["sendMessage"]);
    expect(t.last().sent[0].requestId).toBe(id);
    expect(t.events[0].event.case).toBe("welcome");
    t.live.stop();
  });

  it("reconnects with backoff, resumes from the cursors and re-sends what was not acked", async () => {
    const t = setup();
    t.live.start();
    await flush();
    t.last().welcome();
    const acked = t.live.send({ event: { case: "sendMessage", value: { room: "general", text: "a", clientMsgId: "ca" } } }, { durable: true });
    const lost = t.live.send({ event: { case: "sendMessage", value: { room: "general", text: "b", clientMsgId: "cb" } } }, { durable: true });
    t.last().emit({ requestId: acked, event: { case: "ack", value: { messageId: "m1", seq: 8n } } });

    t.last().end(grpc.Code.Unavailable, "server restarting");
    const st = t.statuses.at(-1)!;
    expect(st.phase).toBe("reconnecting");
    expect(st.attempt).toBe(1);
    expect(st.detail).toBe("Unavailable: server restarting");
    expect(t.streams).toHaveLength(1);

    await vi.advanceTimersByTimeAsync(49);
    expect(t.streams).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(2);
    expect(t.streams).toHaveLength(2);
    t.last().welcome();
    expect(t.last().kinds()).toEqual(["resume", "sendMessage"]);
    const resume = t.last().sent[0].event;
    expect(resume.case === "resume" && resume.value.cursors[0].lastSeq).toBe(7n);
    const resent = t.last().sent[1];
    expect(resent.requestId).toBe(lost);
    expect(resent.event.case === "sendMessage" && resent.event.value.clientMsgId).toBe("cb");
    t.live.stop();
  });

  it("describes a socket closed without a status as a lost connection", () => {
    expect(endDetail(grpc.Code.Internal, "Response closed without grpc-status (Trailers provided)")).toBe("connection lost");
    expect(endDetail(grpc.Code.Unknown, "Response closed without headers")).toBe("connection lost");
    expect(endDetail(grpc.Code.ResourceExhausted, "slow consumer")).toBe("ResourceExhausted: slow consumer");
  });

  it("grows the delay while the server stays down", async () => {
    const t = setup();
    t.live.start();
    await flush();
    const waits: number[] = [];
    for (let i = 0; i < 4; i++) {
      t.last().end(grpc.Code.Unavailable);
      const st = t.statuses.at(-1)!;
      waits.push(st.retryAt! - Date.now());
      await vi.advanceTimersByTimeAsync(st.retryAt! - Date.now());
    }
    expect(waits).toEqual([50, 100, 200, 400]);
    t.last().welcome();
    t.last().end(grpc.Code.Unavailable);
    expect(t.statuses.at(-1)!.attempt).toBe(1);
    t.live.stop();
  });

  it("refreshes the token once after Unauthenticated", async () => {
    const t = setup();
    t.live.start();
    await flush();
    t.last().end(grpc.Code.Unauthenticated, "token expired");
    await flush();
    expect(t.tokenCalls).toEqual([false, true, false]);
    expect(t.streams).toHaveLength(2);
    // Refused again: back off instead of looping.
    t.last().end(grpc.Code.Unauthenticated, "token expired");
    await flush();
    expect(t.streams).toHaveLength(2);
    expect(t.statuses.at(-1)!.retryAt! - Date.now()).toBe(100);
    await vi.advanceTimersByTimeAsync(100);
    expect(t.streams).toHaveLength(3);
    t.live.stop();
  });

  it("stops when an admin disconnects it and reconnects only on request", async () => {
    const t = setup();
    t.live.start();
    await flush();
    t.last().welcome();
    t.last().emit({ event: { case: "serverNotice", value: { kind: NoticeKind.DISCONNECTED, message: "disconnected by an administrator" } } });
    t.last().end(grpc.Code.Aborted, "disconnected by admin");
    expect(t.statuses.at(-1)).toMatchObject({ phase: "stopped", detail: "disconnected by an administrator" });
    await vi.advanceTimersByTimeAsync(60_000);
    expect(t.streams).toHaveLength(1);
    t.live.reconnectNow();
    await flush();
    expect(t.streams).toHaveLength(2);
    t.live.stop();
  });

  it("honours the Disconnect's retry_after", async () => {
    const t = setup();
    t.live.start();
    await flush();
    t.last().welcome();
    t.last().emit({ event: { case: "disconnect", value: { code: 1001, reason: "server shutting down", reconnect: true, retryAfter: durationFromMs(2_000) } } });
    t.last().end(grpc.Code.Unavailable, "shutting down");
    expect(t.statuses.at(-1)!.retryAt! - Date.now()).toBe(2_000);
    expect(t.statuses.at(-1)!.detail).toBe("server shutting down");
    t.live.stop();
  });

  it("forwards a refreshed token in band and pings a quiet stream", async () => {
    const t = setup({ pingMs: 1_000, silenceMs: 10_000 });
    t.live.start();
    await flush();
    t.last().welcome();
    t.live.refreshToken("tok9");
    const ev = t.last().sent[0].event;
    expect(ev.case === "refreshToken" && ev.value.accessToken).toBe("tok9");
    await vi.advanceTimersByTimeAsync(1_000);
    expect(t.last().kinds()).toEqual(["refreshToken", "ping"]);
    // Silence past silenceMs: the stream is replaced.
    await vi.advanceTimersByTimeAsync(10_000);
    expect(t.streams[0].cancelled).toBe(true);
    expect(t.statuses.some((s) => s.detail === "no data from server")).toBe(true);
    t.live.stop();
  });
});
