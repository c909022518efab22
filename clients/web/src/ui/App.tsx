import { useEffect, useMemo, useState } from "react";
import { SessionManager, type SessionData } from "../auth/session";
import { Api } from "../rpc/api";
import { LoginView } from "./LoginView";
import { ChatApp } from "./ChatApp";

/** App switches between the login screen and the chat for one session. */
export function App() {
  const session = useMemo(() => new SessionManager(), []);
  const api = useMemo(() => new Api(session), [session]);
  const [data, setData] = useState<SessionData | null>(session.current);
  const [notice, setNotice] = useState<string | null>(null);

  useEffect(() => session.subscribe(setData), [session]);

  if (!data) return <LoginView session={session} notice={notice} />;
  return (
    <ChatApp
      // A different user gets a fresh chat state and stream.
      key={data.username}
      session={session}
      api={api}
      username={data.username}
      role={data.role}
      onSignedOut={(reason) => {
        setNotice(reason);
        void session.logout();
      }}
    />
  );
}
