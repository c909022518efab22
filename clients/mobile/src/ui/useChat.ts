// useChat wires the live stream, the session and the reducer together and
// exposes the commands the screens need. What both apps do (event reactions,
// resume cursors, the stream's lifetime, the commands sent over it) is
// clients/shared/src/chat/live; this hook binds it to React Native and adds
// the mobile app's fetches over REST.

import { useCallback, useEffect, useMemo, useReducer, useRef } from "react";
import { AppState } from "react-native";
import type { Role } from "../../../shared/src/gen/chat/v1/chat_pb";
import type { SessionManager } from "../auth/session";
import type { Api } from "../api/rest";
import { wsUrl } from "../api/rest";
import type { BackoffOptions } from "../../../shared/src/live/backoff";
import { LiveConnection, type WebSocketFactory } from "../live/connection";
import { fromWire, parseKey, type ConvKey, type FileInfo } from "../../../shared/src/chat/model";
import { initialState, reduce, type ChatState } from "../../../shared/src/chat/store";
import { TokenBucket } from "../../../shared/src/chat/typing";
import { loadConversations } from "../../../shared/src/chat/conversations";
import { liveCommands, liveGaps, onServerEvent, resumeCursors, runLive, type ChatDeps, type LiveCommands } from "../../../shared/src/chat/live";
import type { GapFiller } from "../../../shared/src/chat/gaps";

export { newClientMsgId } from "../../../shared/src/chat/live";

export interface ChatCommands extends LiveCommands {
  refreshOnline(): void;
  download(file: FileInfo): Promise<Uint8Array>;
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

  // A page after a seq, for the shared gap fill.
  const fetchAfter = useCallback<ChatDeps["fetchAfter"]>((key, afterSeq, limit) => api.historyAfter(key, afterSeq, limit), [api]);

  // The app's loaders, read through a ref so the connection and the
  // commands, made once per session, always call the latest ones.
  const loaders = useRef<Pick<ChatDeps, "loadHistory" | "fetchAfter" | "loadConversations" | "refreshOnline">>({
    loadHistory: () => {},
    fetchAfter: () => Promise.reject(new Error("not ready")),
    loadConversations: () => {},
    refreshOnline: () => {},
  });
  loaders.current = { loadHistory, fetchAfter, loadConversations: fetchConversations, refreshOnline: fetchOnline };
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
      url: wsUrl(api.rest.baseUrl),
      webSocket: opts.webSocket,
      backoff: opts.backoff,
      token: (force) => session.accessToken(force),
      onEvent: (ev) => onServerEvent(conn, ev, deps, filler),
      onStatus: (s) => dispatch({ type: "conn", conn: { phase: s.phase, attempt: s.attempt, retryAt: s.retryAt, detail: s.detail } }),
      cursors: () => resumeCursors(stateRef.current, filler),
      onAuthLost: (reason) => signedOut.current(`Signed out: ${reason}`),
    });
    const filler = liveGaps(conn, deps);
    return [conn, filler];
    // The connection lives as long as the session it belongs to.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [session, api, deps]);

  useEffect(() => {
    const stop = runLive(live, session, gaps);
    // Expire typing indicators whose stop never came (only when one is shown).
    const tick = setInterval(() => {
      const showing = Object.values(stateRef.current.convs).some((c) => Object.keys(c.typing).length > 0);
      if (showing) dispatch({ type: "tick", now: Date.now() });
    }, 1000);
    // Back in the foreground: do not wait out a long backoff.
    const sub = AppState.addEventListener?.("change", (s) => {
      if (s === "active" && live.currentPhase !== "connected") live.reconnectNow();
    });
    return () => {
      clearInterval(tick);
      sub?.remove();
      stop();
    };
  }, [live, session, gaps]);

  // Below the server's default typing limit (2/s, burst 5).
  const typingBudget = useMemo(() => new TokenBucket(1.5, 4), []);

  const commands = useMemo<ChatCommands>(
    () => ({
      ...liveCommands(live, deps, typingBudget),
      refreshOnline() {
        fetchOnline();
      },
      download(file) {
        return api.download(file.id);
      },
    }),
    [live, deps, typingBudget, fetchOnline, api],
  );

  return [state, commands, live];
}

export type { ChatState };
