import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { ClientEventSchema, MessageSchema, NoticeKind, Role, ServerEventSchema, type ClientEvent } from "../gen/chat/v1/chat_pb";
import { LiveConnection, type StreamHandlers } from "../live/connection";
import type { SessionData } from "../auth/session";
import { liveCommands, liveGaps, onServerEvent, resumeCursors, runLive, type ChatDeps } from "./live";
import type { GapFiller, HistoryPage } from "./gaps";
import { GAP_PREFIX, initialState, reduce, type Action, type ChatState } from "./store";
import { TokenBucket } from "./typing";
import { roomKey } from "./model";

function harness() {
  const sent: ClientEvent[] = [];
  let h: StreamHandlers | undefined;
  let opened = 0;
  let closed = 0;
  /** history answers fetchAfter; by default it fails. */
  let history: (key: string, afterSeq: number, limit: number) => Promise<HistoryPage> = async () => {
    throw new Error("history down");
  };
  const fetches: string[] = [];
  let state: ChatState = initialState("ann", Role.USER);
  const calls: string[] = [];
  let session: SessionData | null = {
    username: "ann",
    role: Role.USER,
    accessToken: "a1",
    accessExpiresAt: Date.now() + 30_000,
    accessIssuedAt: Date.now(),
    refreshToken: "r1",
    refreshExpiresAt: Date.now() + 3_600_000,
  };
  const listeners = new Set<(d: SessionData | null) => void>();
  const deps: ChatDeps = {
    dispatch: (a: Action) => {
      state = reduce(state, a);
    },
    state: () => state,
    session: {
      get current() {
        return session;
      },
      refresh: async () => {
        calls.push("refresh");
      },
      subscribe: (fn) => {
        listeners.add(fn);
        return () => listeners.delete(fn);
      },
    },
    loadHistory: (key) => calls.push(`history ${key}`),
    fetchAfter: (key, afterSeq, limit) => {
      fetches.push(`${key} after ${afterSeq} limit ${limit}`);
      return history(key, afterSeq, limit);
    },
    loadConversations: () => calls.push("conversations"),
    refreshOnline: () => calls.push("online"),
  };
  const live: LiveConnection = new LiveConnection({
    transport: (_tok, handlers) => {
      h = handlers;
      opened += 1;
      return {
        send: (ev) => sent.push(create(ClientEventSchema, ev)),
        close: () => {
          closed += 1;
        },
      };
    },
    token: async () => session?.accessToken ?? "",
    onEvent: (ev) => onServerEvent(live, ev, deps, gaps),
    onStatus: () => {},
    cursors: () => resumeCursors(state, gaps),
  });
  const gaps: GapFiller = liveGaps(live, deps, { graceMs: 1000, backoff: { initialMs: 1000, random: () => 0 } });
  const emit = (init: MessageInitShape<typeof ServerEventSchema>) => h!.onEvent(create(ServerEventSchema, init));
  const setSession = (d: SessionData | null) => {
    session = d;
    for (const fn of listeners) fn(d);
  };
  return {
    live,
    gaps,
    deps,
    sent,
    emit,
    calls,
    fetches,
    state: () => state,
    setSession,
    kinds: () => sent.map((e) => e.event.case),
    streams: () => ({ opened, closed }),
    setHistory: (fn: typeof history) => {
      history = fn;
    },
  };
}

describe("the shared chat glue", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("lists rooms and conversations on Welcome and forwards refreshed tokens in band", async () => {
    const t = harness();
    const stop = runLive(t.live, t.deps.session, t.gaps);
    await vi.advanceTimersByTimeAsync(0);
    t.emit({ event: { case: "welcome", value: { sessionId: "s", user: { username: "ann" } } } });
    expect(t.kinds()).toEqual(["listRooms"]);
    expect(t.calls).toEqual(["conversations"]);
    t.setSession({ ...t.deps.session.current!, accessToken: "a2" });
    const ev = t.sent[1].event;
    expect(ev.case === "refreshToken" && ev.value.accessToken).toBe("a2");
    await vi.advanceTimersByTimeAsync(15_000);
    expect(t.kinds().at(-1)).toBe("listRooms");
    stop();
  });

  it("refreshes a token about to expire, reloads after an incomplete restore, and loads a joined room", async () => {
    const t = harness();
    const stop = runLive(t.live, t.deps.session, t.gaps);
    await vi.advanceTimersByTimeAsync(0);
    t.emit({ event: { case: "welcome", value: { sessionId: "s", user: { username: "ann" } } } });
    t.emit({ event: { case: "serverNotice", value: { kind: NoticeKind.TOKEN_EXPIRING, message: "soon" } } });
    t.emit({ event: { case: "roomJoined", value: { room: "dev" } } });
    t.emit({ event: { case: "presenceChanged", value: { namesOmitted: true } } });
    t.emit({ event: { case: "stateRestored", value: { complete: false } } });
    expect(t.calls.slice(1, 4)).toEqual(["refresh", `history ${roomKey("dev")}`, "online"]);
    expect(t.calls.slice(4)).toEqual(Object.keys(t.state().convs).map((k) => `history ${k}`));
    stop();
  });

  it("sends texts durably with an optimistic pending message, and throttles typing", async () => {
    const t = harness();
    const stop = runLive(t.live, t.deps.session, t.gaps);
    await vi.advanceTimersByTimeAsync(0);
    t.emit({ event: { case: "welcome", value: { sessionId: "s", user: { username: "ann" } } } });
    const cmd = liveCommands(t.live, t.deps, new TokenBucket(1, 1));
    cmd.sendText(roomKey("general"), "hi");
    const msg = t.sent.at(-1)!;
    expect(msg.event.case === "sendMessage" && msg.event.value.text).toBe("hi");
    const pending = t.state().convs[roomKey("general")].messages.at(-1)!;
    expect(pending).toMatchObject({ text: "hi", pending: true, requestId: msg.requestId, sender: "ann" });
    expect(cmd.typing(roomKey("general"), true)).toBe(true);
    expect(cmd.typing(roomKey("general"), true)).toBe(false);
    expect(cmd.typing(roomKey("general"), false)).toBe(true);
    stop();
  });
});

/** wire is a stored message of general (or room) with seq s. */
function wire(s: number, room = "general", sender = "bob", id = `m${s}`) {
  return create(MessageSchema, {
    id,
    seq: BigInt(s),
    sender,
    conversation: { kind: { case: "room", value: room } },
    body: { case: "text", value: `t${s}` },
  });
}

describe("gap fill through the shared glue", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  async function connected() {
    const t = harness();
    const stop = runLive(t.live, t.deps.session, t.gaps);
    await vi.advanceTimersByTimeAsync(0);
    t.emit({ event: { case: "welcome", value: { sessionId: "s", user: { username: "ann" } } } });
    t.emit({ event: { case: "recentMessages", value: { conversation: { kind: { case: "room", value: "general" } }, messages: [1, 2, 3].map((s) => wire(s)) } } });
    return { t, stop };
  }
  const seqs = (t: ReturnType<typeof harness>, key = roomKey("general")) => t.state().convs[key].messages.map((m) => m.seq);
  /** cursor is where general would resume from. */
  const cursor = (t: ReturnType<typeof harness>) => resumeCursors(t.state(), t.gaps)?.find((c) => c.conversation?.kind?.value === "general")?.lastSeq;

  it("drops duplicates, shows a jumped message at once and fills the gap before it from history, on the same stream", async () => {
    const { t, stop } = await connected();
    t.setHistory(async (_key, after, limit) => ({ messages: [4, 5, 6].filter((s) => s > after).slice(0, limit).map((s) => wire(s)), hasMore: true }));
    // Duplicates of the replay, by seq: dropped before the reducer (which
    // would keep the second, as its id is new).
    t.emit({ event: { case: "message", value: wire(3) } });
    t.emit({ event: { case: "message", value: wire(2, "general", "bob", "other") } });
    expect(seqs(t)).toEqual([1, 2, 3]);
    t.emit({ event: { case: "message", value: wire(7) } });
    expect(seqs(t)).toEqual([1, 2, 3, 7]);
    expect(t.state().convs[roomKey("general")].lastSeq).toBe(7);
    // A reconnect now would resume from before the gap.
    expect(cursor(t)).toBe(3n);
    await vi.advanceTimersByTimeAsync(1000);
    expect(t.fetches).toEqual([`${roomKey("general")} after 3 limit 3`]);
    expect(seqs(t)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    t.emit({ event: { case: "message", value: wire(5) } }); // a late copy
    t.emit({ event: { case: "message", value: wire(8) } });
    expect(seqs(t)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(cursor(t)).toBe(8n);
    expect(t.kinds()).not.toContain("resume");
    expect(t.streams()).toEqual({ opened: 1, closed: 0 });
    expect(t.live.currentPhase).toBe("connected");
    stop();
  });

  it("counts what a fill brings into another conversation as unread", async () => {
    const { t, stop } = await connected();
    t.setHistory(async () => ({ messages: [wire(2, "dev")], hasMore: true }));
    t.emit({ event: { case: "message", value: wire(1, "dev") } }); // no cursor yet: no gap to tell
    t.emit({ event: { case: "message", value: wire(3, "dev") } });
    await vi.advanceTimersByTimeAsync(1000);
    const dev = t.state().convs[roomKey("dev")];
    expect(dev.messages.map((m) => m.seq)).toEqual([1, 2, 3]);
    expect(dev.unread).toBe(3);
    expect(dev.historyLoaded).toBe(false);
    stop();
  });

  it("when history keeps failing, keeps the stream up and falls back to a Resume from before the gap", async () => {
    const { t, stop } = await connected();
    t.emit({ event: { case: "message", value: wire(7) } });
    await vi.advanceTimersByTimeAsync(1000 + 500 + 1000); // the grace, then two retries with backoff
    expect(t.fetches).toHaveLength(3);
    const resume = t.sent.at(-1)!;
    expect(resume.requestId.startsWith(GAP_PREFIX)).toBe(true);
    expect(resume.event.case === "resume" && resume.event.value.cursors.map((c) => [c.conversation?.kind.value, c.lastSeq])).toEqual([["general", 3n]]);
    expect(t.streams()).toEqual({ opened: 1, closed: 0 });
    expect(t.live.currentPhase).toBe("connected");
    expect(seqs(t)).toEqual([1, 2, 3, 7]);

    // The replay fills the gap; its StateRestored is no reconnect to report,
    // and an incomplete one reloads nothing.
    const reqId = resume.requestId;
    t.emit({ requestId: reqId, event: { case: "recentMessages", value: { conversation: { kind: { case: "room", value: "general" } }, messages: [4, 5, 6, 7].map((s) => wire(s)) } } });
    t.emit({ requestId: reqId, event: { case: "stateRestored", value: { rooms: ["general"], messagesReplayed: 4, complete: false } } });
    expect(seqs(t)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(t.state().conn.restoredAt).toBeUndefined();
    expect(t.calls.filter((c) => c.startsWith("history"))).toEqual([]);
    expect(t.gaps.missing(roomKey("general"))).toBe(0);
    stop();
  });

  it("an error answering the gap's Resume is quiet, and a reconnect resumes from before the gap", async () => {
    const { t, stop } = await connected();
    t.emit({ event: { case: "message", value: wire(9) } });
    await vi.advanceTimersByTimeAsync(2500);
    const reqId = t.sent.at(-1)!.requestId;
    t.emit({ requestId: reqId, event: { case: "error", value: { message: "unavailable" } } });
    expect(t.state().toasts).toEqual([]);
    expect(cursor(t)).toBe(3n);
    stop();
  });
});
