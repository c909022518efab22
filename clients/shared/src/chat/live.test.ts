import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { ClientEventSchema, NoticeKind, Role, ServerEventSchema, type ClientEvent } from "../gen/chat/v1/chat_pb";
import { LiveConnection, type StreamHandlers } from "../live/connection";
import type { SessionData } from "../auth/session";
import { liveCommands, onServerEvent, resumeCursors, runLive, type ChatDeps } from "./live";
import { initialState, reduce, type Action, type ChatState } from "./store";
import { TokenBucket } from "./typing";
import { roomKey } from "./model";

function harness() {
  const sent: ClientEvent[] = [];
  let h: StreamHandlers | undefined;
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
    loadConversations: () => calls.push("conversations"),
    refreshOnline: () => calls.push("online"),
  };
  const live: LiveConnection = new LiveConnection({
    transport: (_tok, handlers) => {
      h = handlers;
      return { send: (ev) => sent.push(create(ClientEventSchema, ev)), close: () => {} };
    },
    token: async () => session?.accessToken ?? "",
    onEvent: (ev) => onServerEvent(live, ev, deps),
    onStatus: () => {},
    cursors: () => resumeCursors(state),
  });
  const emit = (init: MessageInitShape<typeof ServerEventSchema>) => h!.onEvent(create(ServerEventSchema, init));
  const setSession = (d: SessionData | null) => {
    session = d;
    for (const fn of listeners) fn(d);
  };
  return { live, deps, sent, emit, calls, state: () => state, setSession, kinds: () => sent.map((e) => e.event.case) };
}

describe("the shared chat glue", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("lists rooms and conversations on Welcome and forwards refreshed tokens in band", async () => {
    const t = harness();
    const stop = runLive(t.live, t.deps.session);
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
    const stop = runLive(t.live, t.deps.session);
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
    const stop = runLive(t.live, t.deps.session);
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
