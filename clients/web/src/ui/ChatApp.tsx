import { useEffect, useState } from "react";
import type { Role } from "../../../shared/src/gen/chat/v1/chat_pb";
import { isStaff, type SessionManager } from "../auth/session";
import type { Api } from "../rpc/api";
import { useChat } from "./useChat";
import { StatusBar } from "./StatusBar";
import { Sidebar } from "./Sidebar";
import { ConversationView } from "./ConversationView";
import { AdminPage } from "./AdminPage";
import { roleName } from "./format";

type Route = "chat" | "admin";

function routeOf(hash: string): Route {
  return hash.replace(/^#\/?/, "").startsWith("admin") ? "admin" : "chat";
}

/** ChatApp is the signed-in app: header, status bar, chat or admin page. */
export function ChatApp(props: {
  session: SessionManager;
  api: Api;
  username: string;
  role: Role;
  onSignedOut: (reason: string) => void;
}) {
  const [state, cmd] = useChat(props);
  const [route, setRoute] = useState<Route>(() => routeOf(window.location.hash));

  useEffect(() => {
    const on = () => setRoute(routeOf(window.location.hash));
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);

  const staff = isStaff(state.role);
  const unread = Object.values(state.convs).reduce((n, c) => n + c.unread, 0);

  // The tab title shows the total unread count.
  useEffect(() => {
    document.title = unread > 0 ? `(${unread}) Parley` : "Parley";
  }, [unread]);

  return (
    <div className="app">
      <header className="topbar">
        <span className="brand">Parley</span>
        <nav aria-label="Main">
          <a href="#/" aria-current={route === "chat" ? "page" : undefined}>
            Chat
          </a>
          {staff && (
            <a href="#/admin" aria-current={route === "admin" ? "page" : undefined}>
              Admin
            </a>
          )}
        </nav>
        <span className="whoami" data-testid="whoami">
          Signed in as <strong>{state.me}</strong> <span className="role">{roleName(state.role)}</span>
        </span>
        <button type="button" className="link" onClick={() => props.onSignedOut("You signed out.")}>
          Log out
        </button>
      </header>
      <StatusBar conn={state.conn} onlineCount={state.onlineCount} onReconnect={cmd.reconnect} />
      {state.broadcasts.length > 0 && (
        <section className="broadcasts" aria-label="Announcements">
          {state.broadcasts.map((b) => (
            <div key={b.id} className="broadcast" role="alert" data-testid="broadcast">
              <span>
                <strong>Announcement from {b.from}</strong>
                {b.room ? ` to #${b.room}` : " to everyone"}: {b.text}
              </span>
              <button type="button" className="link" aria-label="Dismiss announcement" onClick={() => cmd.dismissBroadcast(b.id)}>
                ✕
              </button>
            </div>
          ))}
        </section>
      )}
      {state.toasts.length > 0 && (
        <div className="toasts" role="status" aria-live="polite">
          {state.toasts.map((t) => (
            <div key={t.id} className="toast">
              <span>{t.text}</span>
              <button type="button" className="link" aria-label="Dismiss" onClick={() => cmd.dismissToast(t.id)}>
                ✕
              </button>
            </div>
          ))}
        </div>
      )}
      {route === "admin" ? (
        <AdminPage api={props.api} role={state.role} rooms={Object.keys(state.rooms).sort()} />
      ) : (
        <div className="chat">
          <Sidebar state={state} cmd={cmd} />
          <ConversationView state={state} cmd={cmd} session={props.session} />
        </div>
      )}
    </div>
  );
}
