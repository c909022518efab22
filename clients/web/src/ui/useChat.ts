// useChat wires the live stream, the session and the reducer together and
// exposes the commands the UI needs.

import { useCallback, useEffect, useMemo, useReducer, useRef } from "react";
import { NoticeKind, type Role } from "../../../shared/src/gen/chat/v1/chat_pb";
import type { SessionManager } from "../auth/session";
import type { Api } from "../rpc/api";
import { defs } from "../rpc/api";
import { LiveConnection, newRequestId } from "../live/connection";
import { conversationInit, parseKey, roomKey, type ChatMessage, type ConvKey, type FileInfo } from "../../../shared/src/chat/model";
import { fromWire } from "../../../shared/src/chat/model";
import { QUIET_PREFIX, cursorsOf, initialState, reduce, type ChatState } from "../../../shared/src/chat/store";
import { TokenBucket } from "../../../shared/src/chat/typing";
import { loadConversations } from "../../../shared/src/chat/conversations";
import { errorText } from "../rpc/errors";

/** newClientMsgId returns a random id (works outside secure contexts too). */
export function newClientMsgId(): string {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** ONLINE_PAGE_SIZE is how many online users "show more" fetches. */
const ONLINE_PAGE_SIZE = 100;
/** ONLINE_REFRESH_MS spaces refetches of the online list when presence comes as counts only. */
const ONLINE_REFRESH_MS = 10_000;

export interface ChatCommands {
  open(key: ConvKey): void;
  sendText(key: ConvKey, text: string): void;
  sendFile(key: ConvKey, file: FileInfo): void;
  /** typing sends a typing start/stop; false when a start was not sent. */
  typing(key: ConvKey, typing: boolean): boolean;
  joinRoom(room: string): void;
  leaveRoom(room: string): void;
  listRooms(): void;
  /** moreOnline fetches the next page of online users. */
  moreOnline(): void;
  reconnect(): void;
  dismissBroadcast(id: string): void;
  dismissToast(id: string): void;
  toast(text: string): void;
}

export function useChat(opts: {
  session: SessionManager;
  api: Api;
  username: string;
  role: Role;
  onSignedOut: (reason: string) => void;
}): [ChatState, ChatCommands] {
  const { session, api } = opts;
  const [state, dispatch] = useReducer(reduce, undefined, () => initialState(opts.username, opts.role));
  const stateRef = useRef(state);
  stateRef.current = state;
  const signedOut = useRef(opts.onSignedOut);
  signedOut.current = opts.onSignedOut;

  const live = useMemo(
    () =>
      new LiveConnection({
        token: (force) => session.accessToken(force),
        onEvent: (ev) => {
          dispatch({ type: "server", ev, now: Date.now() });
          if (ev.event.case === "welcome") {
            // Rooms with counts; the stream answers with RoomsList.
            live.send({ event: { case: "listRooms", value: {} } });
            // Every stored conversation, so a DM with someone offline is
            // there after a reload (the stream only brings what moves).
            loadConversationsRef.current();
          }
          if (ev.event.case === "serverNotice" && ev.event.value.kind === NoticeKind.TOKEN_EXPIRING) {
            // The server is about to end the stream: refresh now unless a
            // refresh already moved the expiry well ahead.
            const d = session.current;
            if (d && d.accessExpiresAt - Date.now() < 60_000) session.refresh().catch(() => {});
          }
          if (ev.event.case === "stateRestored" && !ev.event.value.complete) {
            // More was missed than the server replays: fetch the latest page
            // of every conversation (merging dedupes the overlap).
            for (const key of Object.keys(stateRef.current.convs)) loadHistoryRef.current(key);
          }
          if (ev.event.case === "presenceChanged" && ev.event.value.namesOmitted) refreshOnlineRef.current();
          if (ev.event.case === "roomJoined") {
            // Members may read the room's history only once joined.
            const key = roomKey(ev.event.value.room);
            if (!stateRef.current.convs[key]?.historyLoaded) loadHistoryRef.current(key);
          }
        },
        onStatus: (s) =>
          dispatch({ type: "conn", conn: { phase: s.phase, attempt: s.attempt, retryAt: s.retryAt, detail: s.detail } }),
        cursors: () =>
          cursorsOf(stateRef.current).map((c) => ({
            conversation: conversationInit(c.key),
            lastSeq: BigInt(c.lastSeq),
          })),
        onAuthLost: (reason) => signedOut.current(`Signed out: ${reason}`),
      }),
    [session],
  );

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
    const tick = setInterval(() => dispatch({ type: "tick", now: Date.now() }), 1000);
    const rooms = setInterval(() => {
      if (live.currentPhase === "connected") live.send({ event: { case: "listRooms", value: {} } });
    }, 15_000);
    const online = () => {
      if (live.currentPhase !== "connected") live.reconnectNow();
    };
    window.addEventListener("online", online);
    return () => {
      unsub();
      clearInterval(tick);
      clearInterval(rooms);
      window.removeEventListener("online", online);
      live.stop();
    };
  }, [live, session]);

  const loadHistory = useCallback(
    (key: ConvKey) => {
      api
        .call(defs.getHistory, { conversation: conversationInit(key), limit: 100 })
        .then((res) => dispatch({ type: "history", key, messages: res.messages.map(fromWire) }))
        .catch((err: unknown) => dispatch({ type: "toast", text: `History of ${parseKey(key).name}: ${errorText(err)}`, now: Date.now() }));
    },
    [api],
  );

  const loadingConvs = useRef(false);
  const loadConvs = useCallback(() => {
    if (loadingConvs.current) return;
    loadingConvs.current = true;
    loadConversations((pageSize, pageToken) => api.call(defs.listConversations, { pageSize, pageToken }))
      .then((summaries) => dispatch({ type: "conversations", summaries }))
      .catch((err: unknown) => dispatch({ type: "toast", text: `Conversations: ${errorText(err)}`, now: Date.now() }))
      .finally(() => {
        loadingConvs.current = false;
      });
  }, [api]);
  const loadConversationsRef = useRef(loadConvs);
  loadConversationsRef.current = loadConvs;

  // Online users are paged: "show more" fetches the page after the last one
  // loaded; a count-only presence event (names_omitted) refetches the first
  // page, at most once per ONLINE_REFRESH_MS however often such events come.
  const onlineBusy = useRef(false);
  const fetchOnline = useCallback(
    (reset: boolean) => {
      if (onlineBusy.current) return;
      onlineBusy.current = true;
      const pageToken = reset ? "" : stateRef.current.onlineNext;
      api
        .call(defs.listOnlineUsers, { pageSize: ONLINE_PAGE_SIZE, pageToken })
        .then((res) =>
          dispatch({
            type: "onlinePage",
            users: res.users.map((u) => ({ username: u.username, role: u.role })),
            next: res.nextPageToken,
            count: res.onlineCount,
            reset,
          }),
        )
        .catch((err: unknown) => dispatch({ type: "toast", text: `Online users: ${errorText(err)}`, now: Date.now() }))
        .finally(() => {
          onlineBusy.current = false;
        });
    },
    [api],
  );
  const refreshTimer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  const lastRefresh = useRef(0);
  const refreshOnline = useCallback(() => {
    if (refreshTimer.current !== undefined) return; // one already scheduled
    const wait = Math.max(0, lastRefresh.current + ONLINE_REFRESH_MS - Date.now());
    refreshTimer.current = setTimeout(() => {
      refreshTimer.current = undefined;
      lastRefresh.current = Date.now();
      fetchOnline(true);
    }, wait);
  }, [fetchOnline]);
  const refreshOnlineRef = useRef(refreshOnline);
  refreshOnlineRef.current = refreshOnline;
  useEffect(() => () => clearTimeout(refreshTimer.current), []);

  // Below the server's default typing limit (2/s, burst 5).
  const typingBudget = useMemo(() => new TokenBucket(1.5, 4), []);
  const loadHistoryRef = useRef(loadHistory);
  loadHistoryRef.current = loadHistory;

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
        const msg: ChatMessage = {
          id: "",
          seq: 0,
          sender: stateRef.current.me,
          sentAt: Date.now(),
          clientMsgId,
          text,
          pending: true,
          requestId,
        };
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
        live.send(
          { event: { case: "typing", value: { conversation: conversationInit(key), typing } } },
          { requestId: newRequestId(QUIET_PREFIX) },
        );
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
      moreOnline() {
        if (stateRef.current.onlineNext) fetchOnline(false);
      },
      reconnect() {
        live.reconnectNow();
      },
      dismissBroadcast(id) {
        dispatch({ type: "dismissBroadcast", id });
      },
      dismissToast(id) {
        dispatch({ type: "dismissToast", id });
      },
      toast(text) {
        dispatch({ type: "toast", text, now: Date.now() });
      },
    }),
    [live, loadHistory, typingBudget, fetchOnline],
  );

  return [state, commands];
}
