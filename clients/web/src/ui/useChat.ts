// useChat wires the live stream, the session and the reducer together and
// exposes the commands the UI needs. What both apps do (event reactions,
// resume cursors, the stream's lifetime, the commands sent over it) is
// clients/shared/src/chat/live; this hook binds it to React and adds the
// web app's fetches over gRPC-Web.

import { useCallback, useEffect, useMemo, useReducer, useRef } from "react";
import type { Role } from "../../../shared/src/gen/chat/v1/chat_pb";
import type { SessionManager } from "../auth/session";
import type { Api } from "../rpc/api";
import { defs } from "../rpc/api";
import { LiveConnection } from "../live/connection";
import { conversationInit, parseKey, type ConvKey } from "../../../shared/src/chat/model";
import { fromWire } from "../../../shared/src/chat/model";
import { initialState, reduce, type ChatState } from "../../../shared/src/chat/store";
import { TokenBucket } from "../../../shared/src/chat/typing";
import { loadConversations } from "../../../shared/src/chat/conversations";
import { liveCommands, liveGaps, onServerEvent, resumeCursors, runLive, type ChatDeps, type LiveCommands } from "../../../shared/src/chat/live";
import type { GapFiller } from "../../../shared/src/chat/gaps";
import { errorText } from "../rpc/errors";

export { newClientMsgId } from "../../../shared/src/chat/live";

/** ONLINE_PAGE_SIZE is how many online users "show more" fetches. */
const ONLINE_PAGE_SIZE = 100;
/** ONLINE_REFRESH_MS spaces refetches of the online list when presence comes as counts only. */
const ONLINE_REFRESH_MS = 10_000;

export interface ChatCommands extends LiveCommands {
  /** moreOnline fetches the next page of online users. */
  moreOnline(): void;
  dismissBroadcast(id: string): void;
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

  // The app's loaders (defined below), read through a ref so the connection
  // and the commands, made once per session, always call the latest ones.
  const loaders = useRef<Pick<ChatDeps, "loadHistory" | "fetchAfter" | "loadConversations" | "refreshOnline">>({
    loadHistory: () => {},
    fetchAfter: () => Promise.reject(new Error("not ready")),
    loadConversations: () => {},
    refreshOnline: () => {},
  });
  const deps = useMemo<ChatDeps>(
    () => ({
      dispatch,
      state: () => stateRef.current,
      session,
      loadHistory: (key) => loaders.current.loadHistory(key),
      fetchAfter: (key, afterSeq, limit) => loaders.current.fetchAfter(key, afterSeq, limit),
      loadConversations: () => loaders.current.loadConversations(),
      refreshOnline: () => loaders.current.refreshOnline(),
    }),
    [session],
  );
  const [live, gaps] = useMemo((): [LiveConnection, GapFiller] => {
    const conn: LiveConnection = new LiveConnection({
      token: (force) => session.accessToken(force),
      onEvent: (ev) => onServerEvent(conn, ev, deps, filler),
      onStatus: (s) =>
        dispatch({ type: "conn", conn: { phase: s.phase, attempt: s.attempt, retryAt: s.retryAt, detail: s.detail } }),
      cursors: () => resumeCursors(stateRef.current, filler),
      onAuthLost: (reason) => signedOut.current(`Signed out: ${reason}`),
    });
    const filler = liveGaps(conn, deps);
    return [conn, filler];
  }, [session, deps]);

  useEffect(() => {
    const stop = runLive(live, session, gaps);
    const tick = setInterval(() => dispatch({ type: "tick", now: Date.now() }), 1000);
    const online = () => {
      if (live.currentPhase !== "connected") live.reconnectNow();
    };
    window.addEventListener("online", online);
    return () => {
      clearInterval(tick);
      window.removeEventListener("online", online);
      stop();
    };
  }, [live, session, gaps]);

  const loadHistory = useCallback(
    (key: ConvKey) => {
      api
        .call(defs.getHistory, { conversation: conversationInit(key), limit: 100 })
        .then((res) => dispatch({ type: "history", key, messages: res.messages.map(fromWire) }))
        .catch((err: unknown) => dispatch({ type: "toast", text: `History of ${parseKey(key).name}: ${errorText(err)}`, now: Date.now() }));
    },
    [api],
  );

  const fetchAfter = useCallback<ChatDeps["fetchAfter"]>(
    (key, afterSeq, limit) => api.call(defs.getHistory, { conversation: conversationInit(key), afterSeq: BigInt(afterSeq), limit }),
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
  useEffect(() => () => clearTimeout(refreshTimer.current), []);

  loaders.current = { loadHistory, fetchAfter, loadConversations: loadConvs, refreshOnline };

  // Below the server's default typing limit (2/s, burst 5).
  const typingBudget = useMemo(() => new TokenBucket(1.5, 4), []);

  const commands = useMemo<ChatCommands>(
    () => ({
      ...liveCommands(live, deps, typingBudget),
      moreOnline() {
        if (stateRef.current.onlineNext) fetchOnline(false);
      },
      dismissBroadcast(id) {
        dispatch({ type: "dismissBroadcast", id });
      },
      toast(text) {
        dispatch({ type: "toast", text, now: Date.now() });
      },
    }),
    [live, deps, typingBudget, fetchOnline],
  );

  return [state, commands];
}
