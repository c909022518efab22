// useChat wires the live stream, the session and the reducer together and
// exposes the commands the screens need. The logic lives in plain modules
// (chat/store, live/connection, auth/session, api/rest); this hook only
// connects them to React.

import { useCallback, useEffect, useMemo, useReducer, useRef } from "react";
import { AppState } from "react-native";
import { NoticeKind, type Role } from "../../../shared/src/gen/chat/v1/chat_pb";
import type { SessionManager } from "../auth/session";
import type { Api } from "../api/rest";
import { wsUrl } from "../api/rest";
import type { BackoffOptions } from "../../../shared/src/live/backoff";
import { LiveConnection, newRequestId, type WebSocketFactory } from "../live/connection";
import { conversationInit, fromWire, parseKey, roomKey, type ChatMessage, type ConvKey, type FileInfo } from "../../../shared/src/chat/model";
import { QUIET_PREFIX, cursorsOf, initialState, reduce, type ChatState } from "../../../shared/src/chat/store";
import { TokenBucket } from "../../../shared/src/chat/typing";
import { loadConversations } from "../../../shared/src/chat/conversations";

/** newClientMsgId returns a random id for retry-safe sends. */
export function newClientMsgId(): string {
  const c = (globalThis as { crypto?: { getRandomValues?: (b: Uint8Array) => Uint8Array } }).crypto;
  const b = new Uint8Array(16);
  if (c?.getRandomValues) c.getRandomValues(b);
  else for (let i = 0; i < b.length; i++) b[i] = Math.floor(Math.random() * 256);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

export interface ChatCommands {
  open(key: ConvKey): void;
  sendText(key: ConvKey, text: string): void;
  sendFile(key: ConvKey, file: FileInfo): void;
  /** typing sends a typing start/stop; false when a start was not sent. */
  typing(key: ConvKey, typing: boolean): boolean;
  joinRoom(room: string): void;
  leaveRoom(room: string): void;
  listRooms(): void;
  refreshOnline(): void;
  reconnect(): void;
  download(file: FileInfo): Promise<Uint8Array>;
  dismissToast(id: string): void;
}

export interface UseChatOptions {
  session: SessionManager;
  api: Api;
  username: string;
  role: Role;
  onSignedOut: (reason: string) => void;
  webSocket?: WebSocketFactory;
  backoff?: BackoffOptions;
}

export function useChat(opts: UseChatOptions): [ChatState, ChatCommands, LiveConnection] {
  const { session, api } = opts;
  const [state, dispatch] = useReducer(reduce, undefined, () => initialState(opts.username, opts.role));
  const stateRef = useRef(state);
  stateRef.current = state;
  const signedOut = useRef(opts.onSignedOut);
  signedOut.current = opts.onSignedOut;

  const loadHistory = useCallback(
    (key: ConvKey) => {
      api
        .history(key)
        .then((res) => dispatch({ type: "history", key, messages: res.messages.map(fromWire) }))
        .catch((err: Error) => dispatch({ type: "toast", text: `History of ${parseKey(key).name}: ${err.message}`, now: Date.now() }));
    },
    [api],
  );
  const loadHistoryRef = useRef(loadHistory);
  loadHistoryRef.current = loadHistory;

  const fetchOnline = useCallback(() => {
    api
      .onlineUsers(100)
      .then((res) =>
        dispatch({
          type: "onlinePage",
          users: res.users.map((u) => ({ username: u.username, role: u.role })),
          next: res.nextPageToken,
          count: res.onlineCount,
          reset: true,
        }),
      )
      .catch((err: Error) => dispatch({ type: "toast", text: `Online users: ${err.message}`, now: Date.now() }));
  }, [api]);
  // Every stored conversation, so a direct one with someone offline is
  // listed after a restart (the stream only brings what moves).
  const convsBusy = useRef(false);
  const fetchConversations = useCallback(() => {
    if (convsBusy.current) return;
    convsBusy.current = true;
    loadConversations((pageSize, pageToken) => api.conversations(pageSize, pageToken))
      .then((summaries) => dispatch({ type: "conversations", summaries }))
      .catch((err: Error) => dispatch({ type: "toast", text: `Conversations: ${err.message}`, now: Date.now() }))
      .finally(() => {
        convsBusy.current = false;
      });
  }, [api]);
  const fetchConversationsRef = useRef(fetchConversations);
  fetchConversationsRef.current = fetchConversations;
  const fetchOnlineRef = useRef(fetchOnline);
  fetchOnlineRef.current = fetchOnline;

  const live = useMemo(() => {
    const conn: LiveConnection = new LiveConnection({
      url: wsUrl(api.rest.baseUrl),
      webSocket: opts.webSocket,
      backoff: opts.backoff,
      token: (force) => session.accessToken(force),
      onEvent: (ev) => {
        dispatch({ type: "server", ev, now: Date.now() });
        const e = ev.event;
        if (e.case === "welcome") {
          conn.send({ event: { case: "listRooms", value: {} } });
          fetchConversationsRef.current();
        }
        if (e.case === "serverNotice" && e.value.kind === NoticeKind.TOKEN_EXPIRING) {
          const d = session.current;
          if (d && d.accessExpiresAt - Date.now() < 60_000) session.refresh().catch(() => {});
        }
        if (e.case === "stateRestored" && !e.value.complete) {
          // More was missed than the server replays: fetch the latest page
          // of every conversation (merging dedupes the overlap).
          for (const key of Object.keys(stateRef.current.convs)) loadHistoryRef.current(key);
        }
        if (e.case === "presenceChanged" && e.value.namesOmitted) fetchOnlineRef.current();
        if (e.case === "roomJoined") {
          const key = roomKey(e.value.room);
          if (!stateRef.current.convs[key]?.historyLoaded) loadHistoryRef.current(key);
        }
      },
      onStatus: (s) => dispatch({ type: "conn", conn: { phase: s.phase, attempt: s.attempt, retryAt: s.retryAt, detail: s.detail } }),
      cursors: () =>
        cursorsOf(stateRef.current).map((c) => ({
          conversation: conversationInit(c.key),
          lastSeq: BigInt(c.lastSeq),
        })),
      onAuthLost: (reason) => signedOut.current(`Signed out: ${reason}`),
    });
    return conn;
    // The connection lives as long as the session it belongs to.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [session, api]);

  useEffect(() => {
    live.start();
    // Forward refreshed access tokens on the open stream.
    let last = session.current?.accessToken;
    const unsub = session.subscribe((d) => {
      if (d && d.accessToken !== last) {
        last = d.accessToken;
        live.refreshToken(d.accessToken);
      }
    });
    // Expire typing indicators whose stop never came (only when one is shown).
    const tick = setInterval(() => {
      const showing = Object.values(stateRef.current.convs).some((c) => Object.keys(c.typing).length > 0);
      if (showing) dispatch({ type: "tick", now: Date.now() });
    }, 1000);
    const rooms = setInterval(() => {
      if (live.currentPhase === "connected") live.send({ event: { case: "listRooms", value: {} } });
    }, 15_000);
    // Back in the foreground: do not wait out a long backoff.
    const sub = AppState.addEventListener?.("change", (s) => {
      if (s === "active" && live.currentPhase !== "connected") live.reconnectNow();
    });
    return () => {
      unsub();
      clearInterval(tick);
      clearInterval(rooms);
      sub?.remove();
      live.stop();
    };
  }, [live, session]);

  // Below the server's default typing limit (2/s, burst 5).
  const typingBudget = useMemo(() => new TokenBucket(1.5, 4), []);

  const commands = useMemo<ChatCommands>(
    () => ({
      open(key) {
        dispatch({ type: "open", key });
        const c = stateRef.current.convs[key];
        if (!c || !c.historyLoaded) loadHistory(key);
      },
      sendText(key, text) {
        const { kind, name } = parseKey(key);
        const clientMsgId = newClientMsgId();
        const requestId = newRequestId("m");
        const msg: ChatMessage = { id: "", seq: 0, sender: stateRef.current.me, sentAt: Date.now(), clientMsgId, text, pending: true, requestId };
        dispatch({ type: "pending", key, msg });
        if (kind === "room") {
          live.send({ event: { case: "sendMessage", value: { room: name, text, clientMsgId } } }, { durable: true, requestId });
        } else {
          live.send({ event: { case: "sendPrivateMessage", value: { to: name, text, clientMsgId } } }, { durable: true, requestId });
        }
      },
      sendFile(key, file) {
        const clientMsgId = newClientMsgId();
        const requestId = newRequestId("f");
        dispatch({
          type: "pending",
          key,
          msg: { id: "", seq: 0, sender: stateRef.current.me, sentAt: Date.now(), clientMsgId, file, pending: true, requestId },
        });
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
        dispatch({ type: "open", key: roomKey(room) });
      },
      leaveRoom(room) {
        live.send({ event: { case: "leaveRoom", value: { room } } }, { durable: true });
      },
      listRooms() {
        live.send({ event: { case: "listRooms", value: {} } });
      },
      refreshOnline() {
        fetchOnline();
      },
      reconnect() {
        live.reconnectNow();
      },
      download(file) {
        return api.download(file.id);
      },
      dismissToast(id) {
        dispatch({ type: "dismissToast", id });
      },
    }),
    [live, loadHistory, typingBudget, fetchOnline, api],
  );

  return [state, commands, live];
}

export type { ChatState };
