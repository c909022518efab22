import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { ClientEventSchema, NoticeKind, ServerEventSchema, type ClientEvent } from "../gen/chat/v1/chat_pb";
import { LiveConnection, type LiveOptions, type StatusUpdate, type StreamHandlers } from "./connection";
import { closeDetail } from "./disconnect";
import { TRACE_PARENT } from "./traceparent";

/** FakeStream is the server side of one stream of the in-memory transport. */
class FakeStream {
  sent: ClientEvent[] = [];
  closed = false;
  constructor(
    readonly token: string,
    private readonly h: StreamHandlers,
  ) {}

  emit(init: MessageInitShape<typeof ServerEventSchema>) {
    this.h.onEvent(create(ServerEventSchema, init));
  }
  welcome() {
    this.emit({ event: { case: "welcome", value: { sessionId: "s", user: { username: "ann" } } } });
  }
  disconnect(code: number, reconnect: boolean, reason = "", retryAfterMs?: number) {
    this.emit({
      event: {
        case: "disconnect",
        value: { code, reason, reconnect, retryAfter: retryAfterMs === undefined ? undefined : durationFromMs(retryAfterMs) },
      },
    });
  }
  /** end ends the stream with a table code, as a transport reports it. */
  end(code: number, reason = "") {
    this.h.onEnd({ code, reason, detail: closeDetail(code, reason) });
  }
  kinds() {
    return this.sent.map((e) => e.event.case);
  }
}

function setup(overrides: Partial<LiveOptions> = {}) {
  const streams: FakeStream[] = [];
  const statuses: StatusUpdate[] = [];
  const tokenCalls: boolean[] = [];
  const authLost: string[] = [];
  let tokenOK = true;
  const live = new LiveConnection({
    transport: (token, h) => {
      const s = new FakeStream(token, h);
      streams.push(s);
      return {
        send: (ev) => s.sent.push(create(ClientEventSchema, ev)),
        close: () => {
          s.closed = true;
        },
      };
    },
    token: async (force) => {
      tokenCalls.push(force);
      if (!tokenOK) throw new Error("refresh token refused");
      return force ? "fresh" : "cached";
    },
    onEvent: () => {},
    onStatus: (s) => statuses.push(s),
    onAuthLost: (r) => authLost.push(r),
    cursors: () => [
      { conversation: { kind: { case: "room", value: "general" } }, lastSeq: 7n },
      { conversation: { kind: { case: "user", value: "bob" } }, lastSeq: 3n },
    ],
    backoff: { initialMs: 100, random: () => 0 },
    ...overrides,
  });
  return {
    live,
    streams,
    statuses,
    tokenCalls,
    authLost,
    refuseTokens: () => {
      tokenOK = false;
    },
    last: () => streams[streams.length - 1],
    status: () => statuses[statuses.length - 1],
    wait: () => statuses[statuses.length - 1].retryAt! - Date.now(),
  };
}

const flush = () => vi.advanceTimersByTimeAsync(0);

async function connected(overrides: Partial<LiveOptions> = {}) {
  const t = setup(overrides);
  t.live.start();
  await flush();
  t.last().welcome();
  return t;
}

describe("LiveConnection's reconnect rule, when a Disconnect arrives", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("stays disconnected when it says so, whatever the close code", async () => {
    const t = await connected();
    t.last().disconnect(1008, false, "kicked for flooding");
    t.last().end(4500, "internal"); // 4500 alone would reconnect
    expect(t.status()).toMatchObject({ phase: "stopped", detail: "kicked for flooding" });
    await vi.advanceTimersByTimeAsync(60_000);
    expect(t.streams).toHaveLength(1);
    expect(t.authLost).toEqual([]);
    t.live.reconnectNow();
    await flush();
    expect(t.streams).toHaveLength(2);
    t.live.stop();
  });

  it("reconnects when it says so, whatever the close code, and resumes every conversation", async () => {
    const t = await connected();
    t.last().disconnect(1012, true, "restarting");
    t.last().end(1000); // 1000 alone would stop
    expect(t.status()).toMatchObject({ phase: "reconnecting", attempt: 1, detail: "restarting" });
    await vi.advanceTimersByTimeAsync(t.wait());
    expect(t.streams).toHaveLength(2);
    t.last().welcome();
    expect(t.last().kinds()).toEqual(["resume"]);
    const r = t.last().sent[0].event;
    expect(r.case === "resume" && r.value.cursors.map((c) => [c.conversation?.kind.value, c.lastSeq])).toEqual([
      ["general", 7n],
      ["bob", 3n],
    ]);
    t.live.stop();
  });

  it("waits at least retry_after, and longer when the backoff says so", async () => {
    const t = await connected();
    t.last().disconnect(4429, true, "too many connections", 3_000);
    t.last().end(4429);
    expect(t.wait()).toBe(3_000);
    await vi.advanceTimersByTimeAsync(2_999);
    expect(t.streams).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(t.streams).toHaveLength(2);
    // retry_after below the backoff: the backoff wins (attempt 2: 100 ms).
    t.last().disconnect(4500, true, "", 10);
    t.last().end(4500);
    expect(t.wait()).toBe(100);
    t.live.stop();
  });

  it("gets a new token before reconnecting after 4401", async () => {
    const t = await connected();
    t.last().disconnect(4401, true, "token expired");
    t.last().end(4401);
    await flush();
    expect(t.tokenCalls).toEqual([false, true, false]);
    expect(t.streams).toHaveLength(2);
    t.live.stop();
  });

  it("waits retry_after even on the first reconnect after 4401", async () => {
    const t = await connected();
    t.last().disconnect(4401, true, "token expired", 1_000);
    t.last().end(4401);
    await flush();
    expect(t.tokenCalls).toEqual([false, true]);
    expect(t.wait()).toBe(1_000);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(t.streams).toHaveLength(2);
    t.live.stop();
  });

  it("signs out after 4403", async () => {
    const t = await connected();
    t.last().disconnect(4403, false, "account deactivated");
    t.last().end(4403);
    expect(t.status()).toMatchObject({ phase: "stopped", detail: "account deactivated" });
    expect(t.authLost).toEqual(["account deactivated"]);
    t.live.stop();
  });

  it("forgets a Disconnect once its stream is gone", async () => {
    const t = await connected();
    t.last().disconnect(1012, true);
    t.last().end(1012);
    await vi.advanceTimersByTimeAsync(t.wait());
    t.last().welcome();
    t.last().end(4400); // the new stream had no Disconnect: the table says stop
    expect(t.status().phase).toBe("stopped");
    t.live.stop();
  });
});

describe("LiveConnection's reconnect rule, from the code alone", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it.each([
    [1000, "stopped"],
    [1009, "stopped"],
    [4400, "stopped"],
    [4403, "stopped"],
    [4409, "stopped"],
    [1001, "reconnecting"],
    [1006, "reconnecting"],
    [1008, "reconnecting"],
    [1012, "reconnecting"],
    [4408, "reconnecting"],
    [4429, "reconnecting"],
    [4500, "reconnecting"],
    [3999, "reconnecting"],
  ])("close code %i leaves it %s", async (code, phase) => {
    const t = await connected();
    t.last().end(code);
    expect(t.status().phase).toBe(phase);
    expect(t.authLost).toEqual(code === 4403 ? [closeDetail(4403, "")] : []);
    t.live.stop();
  });

  it("waits at least 5 s after 4429", async () => {
    const t = await connected();
    t.last().end(4429);
    expect(t.wait()).toBe(5_000);
    t.live.stop();
  });

  it("refreshes the token after 4401: at once the first time, with backoff after that", async () => {
    const t = setup();
    t.live.start();
    await flush();
    t.last().end(4401, "token expired");
    await flush();
    expect(t.tokenCalls).toEqual([false, true, false]);
    expect(t.streams).toHaveLength(2);
    t.last().end(4401, "token expired");
    await flush();
    expect(t.streams).toHaveLength(2);
    expect(t.wait()).toBe(100);
    t.live.stop();
  });

  it("signs out when no new token can be had after 4401", async () => {
    const t = await connected();
    t.refuseTokens();
    t.last().end(4401);
    await flush();
    expect(t.status()).toMatchObject({ phase: "stopped", detail: "signed out: refresh token refused" });
    expect(t.authLost).toEqual(["refresh token refused"]);
    t.live.stop();
  });

  it("lets no notice decide: a disconnect notice without a stopping code reconnects", async () => {
    const t = await connected();
    t.last().emit({ event: { case: "serverNotice", value: { kind: NoticeKind.DISCONNECTED, message: "disconnected by an administrator" } } });
    t.last().end(4500);
    // The notice's words are shown; the code decides.
    expect(t.status()).toMatchObject({ phase: "reconnecting", detail: "disconnected by an administrator" });
    t.live.stop();
  });
});

describe("LiveConnection's stream", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("re-sends what was not answered, in order, with the same request ids", async () => {
    const t = await connected();
    const a = t.live.send({ event: { case: "sendMessage", value: { room: "general", text: "a", clientMsgId: "ca" } } }, { durable: true });
    const b = t.live.send({ event: { case: "sendMessage", value: { room: "general", text: "b", clientMsgId: "cb" } } }, { durable: true });
    t.live.send({ event: { case: "typing", value: { typing: true } } });
    t.last().emit({ requestId: a, event: { case: "ack", value: { messageId: "m1", seq: 8n } } });
    t.last().end(1006);
    const c = t.live.send({ event: { case: "sendMessage", value: { room: "general", text: "c", clientMsgId: "cc" } } }, { durable: true });
    t.live.send({ event: { case: "typing", value: { typing: false } } }); // dropped while away
    await vi.advanceTimersByTimeAsync(t.wait());
    expect(t.last().sent).toEqual([]); // nothing before Welcome
    t.last().welcome();
    expect(t.last().kinds()).toEqual(["resume", "sendMessage", "sendMessage"]);
    expect(t.last().sent.slice(1).map((e) => e.requestId)).toEqual([b, c]);
    expect(t.live.reconnects).toBe(1);
    t.live.stop();
  });

  it("gives every command but keepalive pings a traceparent of its own, the same on every re-send", async () => {
    const t = await connected({ pingMs: 1_000 });
    const a = t.live.send({ event: { case: "sendMessage", value: { room: "general", text: "a", clientMsgId: "ca" } } }, { durable: true });
    t.live.send({ event: { case: "typing", value: { typing: true } } });
    t.live.send(
      { event: { case: "joinRoom", value: { room: "dev" } }, traceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
      { durable: true },
    );
    t.live.refreshToken("tok2");
    await vi.advanceTimersByTimeAsync(1_000); // a keepalive ping
    const first = t.last().sent;
    expect(first.map((e) => e.event.case)).toEqual(["sendMessage", "typing", "joinRoom", "refreshToken", "ping"]);
    for (const e of first.slice(0, 4)) expect(e.traceParent).toMatch(TRACE_PARENT);
    expect(new Set(first.slice(0, 4).map((e) => e.traceParent)).size).toBe(4);
    expect(first[2].traceParent).toBe("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"); // the caller's, kept
    expect(first[4].traceParent).toBe("");
    expect(first.every((e) => e.traceState === "")).toBe(true);

    t.last().end(1006);
    await vi.advanceTimersByTimeAsync(t.wait());
    t.last().welcome();
    const again = t.last().sent;
    expect(again.map((e) => e.event.case)).toEqual(["resume", "sendMessage", "joinRoom"]);
    expect(again[0].traceParent).toMatch(TRACE_PARENT);
    expect(again[1].requestId).toBe(a);
    expect(again[1].traceParent).toBe(first[0].traceParent); // a retry joins its first try's trace
    expect(again[2].traceParent).toBe(first[2].traceParent);
    t.live.stop();
  });

  it("opens each stream with the current token and forwards refreshed ones in band", async () => {
    const t = await connected();
    expect(t.last().token).toBe("cached");
    t.live.refreshToken("tok9");
    const ev = t.last().sent[0].event;
    expect(ev.case === "refreshToken" && ev.value.accessToken).toBe("tok9");
    t.live.stop();
    expect(t.last().closed).toBe(true);
  });

  it("grows the delay while the server stays away and starts over after a Welcome", async () => {
    const t = setup();
    t.live.start();
    await flush();
    const waits: number[] = [];
    for (let i = 0; i < 4; i++) {
      t.last().end(1006);
      waits.push(t.wait());
      await vi.advanceTimersByTimeAsync(t.wait());
    }
    expect(waits).toEqual([50, 100, 200, 400]);
    t.last().welcome();
    t.last().end(1006);
    expect(t.status().attempt).toBe(1);
    t.live.stop();
  });

  it("retries when the transport cannot open", async () => {
    let fail = true;
    const t = setup();
    const inner = (t.live as unknown as { opts: LiveOptions }).opts.transport;
    (t.live as unknown as { opts: LiveOptions }).opts.transport = (tok, h) => {
      if (fail) throw new Error("no network");
      return inner(tok, h);
    };
    t.live.start();
    await flush();
    expect(t.status()).toMatchObject({ phase: "connecting", attempt: 1, detail: "cannot open a stream: no network" });
    fail = false;
    await vi.advanceTimersByTimeAsync(t.wait());
    expect(t.streams).toHaveLength(1);
    t.live.stop();
  });

  it("replaces a silent stream", async () => {
    const t = await connected({ pingMs: 1_000, silenceMs: 5_000 });
    await vi.advanceTimersByTimeAsync(1_000);
    expect(t.last().kinds()).toEqual(["ping"]);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(t.streams[0].closed).toBe(true);
    expect(t.statuses.some((s) => s.detail === "no data from server")).toBe(true);
    t.live.stop();
  });
});

describe("LiveConnection with a transport that ends at once", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("keeps no dead stream and retries", async () => {
    let opened = 0;
    const statuses: StatusUpdate[] = [];
    const live = new LiveConnection({
      transport: (_tok, h) => {
        opened += 1;
        h.onEnd({ code: 1006, reason: "", detail: "connection lost" });
        return { send: () => {}, close: () => {} };
      },
      token: async () => "t",
      onEvent: () => {},
      onStatus: (s) => statuses.push(s),
      cursors: () => [],
      backoff: { initialMs: 100, random: () => 0 },
    });
    live.start();
    await flush();
    expect(statuses.at(-1)).toMatchObject({ phase: "connecting", attempt: 1, detail: "connection lost" });
    expect((live as unknown as { stream: unknown }).stream).toBeNull();
    await vi.advanceTimersByTimeAsync(50);
    expect(opened).toBe(2);
    live.stop();
  });
});
