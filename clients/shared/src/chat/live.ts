// The glue both apps' useChat hooks share between the live connection, the
// session and the reducer: what to do on each server event, where to resume
// from, the gap fill of live messages (./gaps), the stream's lifetime (token
// forwarding, room refreshes) and the commands that go over the stream. The
// hooks only bind these to React and add what differs (how each app fetches
// history, online users, files).
//
// Plain functions, no React; used from the JS thread only.

import { NoticeKind, type ServerEvent } from "../gen/chat/v1/chat_pb";
import type { LiveConnection, CursorInit } from "../live/connection";
import { newRequestId } from "../live/connection";
import type { SessionData } from "../auth/session";
import { randomHex } from "../live/traceparent";
import { GapFiller, type FetchAfter, type GapOptions } from "./gaps";
import { conversationInit, keyOf, parseKey, peerKeyOf, roomKey, type ChatMessage, type ConvKey, type FileInfo } from "./model";
import { GAP_PREFIX, QUIET_PREFIX, cursorsOf, type Action, type ChatState } from "./store";
import type { TokenBucket } from "./typing";

/** SessionLike is the part of SessionManager the glue uses. */
export interface SessionLike {
  readonly current: SessionData | null;
  refresh(): Promise<unknown>;
  subscribe(fn: (d: SessionData | null) => void): () => void;
}

/** ChatDeps are what an app hands the glue; loaders read through refs, so they may change. */
export interface ChatDeps {
  dispatch: (a: Action) => void;
  /** state returns the latest reduced state. */
  state: () => ChatState;
  session: SessionLike;
  /** loadHistory fetches the latest page of one conversation. */
  loadHistory: (key: ConvKey) => void;
  /** fetchAfter fetches a page of one conversation after a seq (GetHistory after_seq), for gap fills. */
  fetchAfter: FetchAfter;
  /** loadConversations fetches every stored conversation. */
  loadConversations: () => void;
  /** refreshOnline refetches the online users (presence came as counts only). */
  refreshOnline: () => void;
}

/** newClientMsgId returns a random id for retry-safe sends (works outside secure contexts too). */
export function newClientMsgId(): string {
  return randomHex(16);
}

/**
 * resumeCursors is where every conversation resumes from, in wire form:
 * before a gap still open (gaps), so that the replay fills it.
 */
export function resumeCursors(state: ChatState, gaps: GapFiller): CursorInit {
  const cursors = cursorsOf(state).map((c) => ({ key: c.key, lastSeq: gaps.cursor(c.key, c.lastSeq) }));
  // The state may lag behind the events: add what only the filler saw yet.
  for (const key of gaps.keys()) if (!state.convs[key]) cursors.push({ key, lastSeq: gaps.cursor(key, 0) });
  return cursors.map((c) => ({ conversation: conversationInit(c.key), lastSeq: BigInt(c.lastSeq) }));
}

/**
 * liveGaps makes the gap filler of one live connection: it fetches through
 * d.fetchAfter, fills the state with gapFill and falls back to a Resume of
 * the conversation over live (request id GAP_PREFIX…). Stop it with the
 * connection (runLive does).
 */
export function liveGaps(live: LiveConnection, d: ChatDeps, opts: Partial<GapOptions> = {}): GapFiller {
  return new GapFiller({
    fetchAfter: (key, afterSeq, limit) => d.fetchAfter(key, afterSeq, limit),
    deliver: (key, messages) => d.dispatch({ type: "gapFill", key, messages }),
    resume: (key, afterSeq) =>
      live.send(
        { event: { case: "resume", value: { cursors: [{ conversation: conversationInit(key), lastSeq: BigInt(afterSeq) }] } } },
        { requestId: newRequestId(GAP_PREFIX) },
      ),
    ...opts,
  });
}

/** knownSeq is the state's cursor for key; undefined when it has none yet. */
function knownSeq(state: ChatState, key: ConvKey): number | undefined {
  const c = state.convs[key];
  return c && (c.lastSeq > 0 || c.historyLoaded) ? c.lastSeq : undefined;
}

/**
 * onServerEvent reduces one event and does what it calls for. Live
 * messages pass the gap filler first: a duplicate is dropped here, a jump
 * past the cursor is delivered and its gap filled.
 */
export function onServerEvent(live: LiveConnection, ev: ServerEvent, d: ChatDeps, gaps: GapFiller): void {
  const e = ev.event;
  if (e.case === "message") {
    const st = d.state();
    const key = keyOf(e.value.conversation, st.me, e.value.sender);
    if (key && gaps.message(key, Number(e.value.seq), knownSeq(st, key)) === "duplicate") return;
  } else if (e.case === "recentMessages") {
    const key = peerKeyOf(e.value.conversation);
    if (key) gaps.seen(key, e.value.messages.map((m) => Number(m.seq)));
  } else if (e.case === "ack" && e.value.conversation) {
    // Our own message: like a live one (its echo may come later, or not
    // before other members' older ones), but always reduced, as it settles
    // the pending copy.
    const st = d.state();
    const key = keyOf(e.value.conversation, st.me, st.me);
    if (key) gaps.message(key, Number(e.value.seq), knownSeq(st, key));
  }
  d.dispatch({ type: "server", ev, now: Date.now() });
  if (e.case === "welcome") {
    // Rooms with counts; the stream answers with RoomsList.
    live.send({ event: { case: "listRooms", value: {} } });
    // Every stored conversation, so a direct one with someone offline is
    // there after a reload (the stream only brings what moves).
    d.loadConversations();
  }
  if (e.case === "serverNotice" && e.value.kind === NoticeKind.TOKEN_EXPIRING) {
    // The server is about to end the stream: refresh now unless a refresh
    // already moved the expiry well ahead.
    const s = d.session.current;
    if (s && s.accessExpiresAt - Date.now() < 60_000) d.session.refresh().catch(() => {});
  }
  if (e.case === "stateRestored" && !e.value.complete && !ev.requestId.startsWith(GAP_PREFIX)) {
    // More was missed than the server replays: fetch the latest page of
    // every conversation (merging dedupes the overlap).
    for (const key of Object.keys(d.state().convs)) d.loadHistory(key);
  }
  if (e.case === "presenceChanged" && e.value.namesOmitted) d.refreshOnline();
  if (e.case === "roomJoined") {
    // Members may read the room's history only once joined.
    const key = roomKey(e.value.room);
    if (!d.state().convs[key]?.historyLoaded) d.loadHistory(key);
  }
}

/**
 * runLive starts the stream and keeps it fed while it lives: refreshed
 * access tokens go in band, the room list is refreshed every 15 s. The
 * returned function stops it all, gaps' pending fills included.
 */
export function runLive(live: LiveConnection, session: SessionLike, gaps: GapFiller): () => void {
  live.start();
  let last = session.current?.accessToken;
  const unsub = session.subscribe((d) => {
    if (d && d.accessToken !== last) {
      last = d.accessToken;
      live.refreshToken(d.accessToken);
    }
  });
  const rooms = setInterval(() => {
    if (live.currentPhase === "connected") live.send({ event: { case: "listRooms", value: {} } });
  }, 15_000);
  return () => {
    unsub();
    clearInterval(rooms);
    gaps.stop();
    live.stop();
  };
}

/** LiveCommands are the commands both apps send over the stream. */
export interface LiveCommands {
  open(key: ConvKey): void;
  sendText(key: ConvKey, text: string): void;
  sendFile(key: ConvKey, file: FileInfo): void;
  /** typing sends a typing start/stop; false when a start was not sent. */
  typing(key: ConvKey, typing: boolean): boolean;
  joinRoom(room: string): void;
  leaveRoom(room: string): void;
  listRooms(): void;
  reconnect(): void;
  dismissToast(id: string): void;
}

/**
 * liveCommands builds the commands. typingBudget keeps typing signals under
 * the server's limit; a stop always goes out (it may borrow from the budget).
 */
export function liveCommands(live: LiveConnection, d: ChatDeps, typingBudget: TokenBucket): LiveCommands {
  const pending = (key: ConvKey, msg: Omit<ChatMessage, "id" | "seq" | "sender" | "sentAt" | "pending">) =>
    d.dispatch({ type: "pending", key, msg: { id: "", seq: 0, sender: d.state().me, sentAt: Date.now(), pending: true, ...msg } });
  return {
    open(key) {
      d.dispatch({ type: "open", key });
      const c = d.state().convs[key];
      if (!c || !c.historyLoaded) d.loadHistory(key);
    },
    sendText(key, text) {
      const { kind, name } = parseKey(key);
      const clientMsgId = newClientMsgId();
      const requestId = newRequestId("m");
      pending(key, { clientMsgId, text, requestId });
      if (kind === "room") {
        live.send({ event: { case: "sendMessage", value: { room: name, text, clientMsgId } } }, { durable: true, requestId });
      } else {
        live.send({ event: { case: "sendPrivateMessage", value: { to: name, text, clientMsgId } } }, { durable: true, requestId });
      }
    },
    sendFile(key, file) {
      const clientMsgId = newClientMsgId();
      const requestId = newRequestId("f");
      pending(key, { clientMsgId, file, requestId });
      live.send(
        { event: { case: "sendFile", value: { conversation: conversationInit(key), fileId: file.id, clientMsgId } } },
        { durable: true, requestId },
      );
    },
    typing(key, typing) {
      if (typing && !typingBudget.tryTake()) return false;
      if (!typing) typingBudget.take();
      live.send({ event: { case: "typing", value: { conversation: conversationInit(key), typing } } }, { requestId: newRequestId(QUIET_PREFIX) });
      return true;
    },
    joinRoom(room) {
      // History is loaded when RoomJoined confirms the membership.
      live.send({ event: { case: "joinRoom", value: { room } } }, { durable: true });
      d.dispatch({ type: "open", key: roomKey(room) });
    },
    leaveRoom(room) {
      live.send({ event: { case: "leaveRoom", value: { room } } }, { durable: true });
    },
    listRooms() {
      live.send({ event: { case: "listRooms", value: {} } });
    },
    reconnect() {
      live.reconnectNow();
    },
    dismissToast(id) {
      d.dispatch({ type: "dismissToast", id });
    },
  };
}
