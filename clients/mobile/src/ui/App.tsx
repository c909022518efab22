// The app root: the login screen until a session exists, then the chat.

import React, { useCallback, useEffect, useRef, useState } from "react";
import { StyleSheet, View } from "react-native";
import type { Role } from "../../../shared/src/gen/chat/v1/chat_pb";
import { Api, RestClient, type FetchLike } from "../api/rest";
import { SessionManager } from "../auth/session";
import type { WebSocketFactory } from "../live/connection";
import type { BackoffOptions } from "../../../shared/src/live/backoff";
import { LoginScreen } from "./LoginScreen";
import { ChatScreen } from "./ChatScreen";

export interface AppProps {
  /** defaultServerUrl fills the server field (10.0.2.2 is the host from the Android emulator). */
  defaultServerUrl?: string;
  /** fetchImpl and webSocket replace the runtime's fetch and WebSocket (tests). */
  fetchImpl?: FetchLike;
  webSocket?: WebSocketFactory;
  /** backoff shapes reconnect delays (defaults: 0.5 s doubling to 15 s, with jitter). */
  backoff?: BackoffOptions;
}

interface Signed {
  session: SessionManager;
  api: Api;
  username: string;
  role: Role;
}

export default function App({ defaultServerUrl = "http://10.0.2.2:8080", fetchImpl, webSocket, backoff }: AppProps) {
  const [signed, setSigned] = useState<Signed | null>(null);
  const [notice, setNotice] = useState("");
  const [serverUrl, setServerUrl] = useState(defaultServerUrl);
  const current = useRef<Signed | null>(null);
  current.current = signed;

  const submit = useCallback(
    async (mode: "login" | "register", url: string, username: string, password: string) => {
      const rest = new RestClient(url, fetchImpl);
      const session = new SessionManager(rest);
      const d = mode === "login" ? await session.login(username, password) : await session.register(username, password);
      setServerUrl(rest.baseUrl);
      setNotice("");
      setSigned({ session, api: new Api(rest, (force) => session.accessToken(force)), username: d.username, role: d.role });
    },
    [fetchImpl],
  );

  const signOut = useCallback((reason: string) => {
    current.current?.session.dispose();
    setSigned(null);
    setNotice(reason);
  }, []);

  const logout = useCallback(() => {
    const s = current.current;
    setSigned(null);
    setNotice("Logged out");
    if (s) void s.session.logout().finally(() => s.session.dispose());
  }, []);

  useEffect(() => () => current.current?.session.dispose(), []);

  return (
    <View style={styles.root}>
      {signed ? (
        <ChatScreen
          key={signed.username}
          session={signed.session}
          api={signed.api}
          username={signed.username}
          role={signed.role}
          onSignedOut={signOut}
          onLogout={logout}
          webSocket={webSocket}
          backoff={backoff}
        />
      ) : (
        <LoginScreen defaultServerUrl={serverUrl} submit={submit} notice={notice} />
      )}
    </View>
  );
}

const styles = StyleSheet.create({ root: { flex: 1, paddingTop: 24 } });
