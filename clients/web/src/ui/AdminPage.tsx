import { useEffect, useId, useState, type FormEvent } from "react";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { Role } from "../../../shared/src/gen/chat/v1/chat_pb";
import { isStaff } from "../auth/session";
import { defs, type Api } from "../rpc/api";
import { errorText } from "../rpc/errors";
import { StatsChart, type Sample } from "./StatsChart";

const POLL_MS = 2_000;
const KEEP = 60;

/**
 * AdminPage is for moderators and admins. The role check here only hides
 * what cannot work: the server enforces it, and a plain user who opens the
 * page sees "Not authorized" along with the server's own refusal.
 */
export function AdminPage({ api, role, rooms }: { api: Api; role: Role; rooms: string[] }) {
  if (!isStaff(role)) return <NotAuthorized api={api} />;
  return (
    <main className="admin" aria-labelledby="admin-title">
      <h1 id="admin-title">Admin</h1>
      <Stats api={api} />
      <div className="admin-forms">
        <BroadcastForm api={api} rooms={rooms} />
        <UserForm api={api} canSetRole={role === Role.ADMIN} />
      </div>
    </main>
  );
}

function NotAuthorized({ api }: { api: Api }) {
  const [server, setServer] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    api
      .call(defs.getStats, {})
      .then(() => live && setServer("The server answered; reload to see your new role."))
      .catch((err) => live && setServer(`Server: ${errorText(err)}`));
    return () => {
      live = false;
    };
  }, [api]);
  return (
    <main className="admin" aria-labelledby="admin-title">
      <h1 id="admin-title" data-testid="admin-denied">
        Not authorized
      </h1>
      <p>The admin page is for moderators and admins.</p>
      {server && (
        <p className="muted" data-testid="admin-server-answer">
          {server}
        </p>
      )}
      <p>
        <a href="#/">Back to chat</a>
      </p>
    </main>
  );
}

function Stats({ api }: { api: Api }) {
  const [samples, setSamples] = useState<Sample[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [nodes, setNodes] = useState<{ id: string; connections: number; uptime: number }[]>([]);

  useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout>;
    const poll = async () => {
      try {
        const res = await api.call(defs.getStats, {});
        if (!live) return;
        const t = res.total;
        setError(null);
        setSamples((s) =>
          [
            ...s,
            {
              at: Date.now(),
              connections: Number(t?.connections ?? 0),
              onlineUsers: Number(t?.onlineUsers ?? 0),
              rooms: Number(t?.rooms ?? 0),
              inPerSec: t?.messagesInPerSecond ?? 0,
              outPerSec: t?.messagesOutPerSecond ?? 0,
              inTotal: Number(t?.messagesInTotal ?? 0),
              outTotal: Number(t?.messagesOutTotal ?? 0),
            },
          ].slice(-KEEP),
        );
        setNodes(
          res.nodes.map((n) => ({ id: n.nodeId, connections: Number(n.connections), uptime: n.uptime ? durationMs(n.uptime) : 0 })),
        );
      } catch (err) {
        if (live) setError(errorText(err));
      } finally {
        if (live) timer = setTimeout(poll, POLL_MS);
      }
    };
    void poll();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [api]);

  const last = samples[samples.length - 1];
  return (
    <section className="card" aria-labelledby="stats-title">
      <h2 id="stats-title">Live stats</h2>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      {last ? (
        <dl className="stats" data-testid="stats">
          <div>
            <dt>Connections</dt>
            <dd data-testid="stat-connections">{last.connections}</dd>
          </div>
          <div>
            <dt>Online users</dt>
            <dd data-testid="stat-online">{last.onlineUsers}</dd>
          </div>
          <div>
            <dt>Rooms</dt>
            <dd>{last.rooms}</dd>
          </div>
          <div>
            <dt>Messages in/s</dt>
            <dd>{last.inPerSec.toFixed(1)}</dd>
          </div>
          <div>
            <dt>Messages out/s</dt>
            <dd>{last.outPerSec.toFixed(1)}</dd>
          </div>
          <div>
            <dt>Messages in (total)</dt>
            <dd data-testid="stat-in-total">{last.inTotal}</dd>
          </div>
        </dl>
      ) : (
        !error && <p className="muted">Loading…</p>
      )}
      <StatsChart samples={samples} />
      {nodes.length > 1 && (
        <table className="nodes">
          <caption>Nodes</caption>
          <thead>
            <tr>
              <th scope="col">Node</th>
              <th scope="col">Connections</th>
              <th scope="col">Uptime</th>
            </tr>
          </thead>
          <tbody>
            {nodes.map((n) => (
              <tr key={n.id}>
                <td>{n.id}</td>
                <td>{n.connections}</td>
                <td>{Math.round(n.uptime / 1000)} s</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function useResult(testId: string) {
  const [result, setResult] = useState<{ ok: boolean; text: string } | null>(null);
  const run = async (fn: () => Promise<string>) => {
    setResult(null);
    try {
      setResult({ ok: true, text: await fn() });
    } catch (err) {
      setResult({ ok: false, text: errorText(err) });
    }
  };
  const view = result && (
    <p className={result.ok ? "ok-text" : "error"} role="status" data-testid={testId}>
      {result.text}
    </p>
  );
  return { run, view };
}

function BroadcastForm({ api, rooms }: { api: Api; rooms: string[] }) {
  const [text, setText] = useState("");
  const [room, setRoom] = useState("");
  const uid = useId();
  const { run, view } = useResult("broadcast-result");
  function submit(e: FormEvent) {
    e.preventDefault();
    void run(async () => {
      const res = await api.call(defs.broadcast, { text, room });
      setText("");
      return `Broadcast queued to ${res.sessions} session${res.sessions === 1n ? "" : "s"}.`;
    });
  }
  return (
    <section className="card" aria-labelledby={`${uid}-t`}>
      <h2 id={`${uid}-t`}>Broadcast</h2>
      <form onSubmit={submit}>
        <label htmlFor={`${uid}-text`}>Announcement</label>
        <textarea id={`${uid}-text`} required maxLength={4000} rows={2} value={text} onChange={(e) => setText(e.target.value)} />
        <label htmlFor={`${uid}-room`}>To</label>
        <select id={`${uid}-room`} value={room} onChange={(e) => setRoom(e.target.value)}>
          <option value="">Everyone</option>
          {rooms.map((r) => (
            <option key={r} value={r}>
              #{r}
            </option>
          ))}
        </select>
        <button type="submit" className="primary">
          Send broadcast
        </button>
      </form>
      {view}
    </section>
  );
}

function UserForm({ api, canSetRole }: { api: Api; canSetRole: boolean }) {
  const [username, setUsername] = useState("");
  const [reason, setReason] = useState("");
  const [role, setRole] = useState<Role>(Role.MODERATOR);
  const uid = useId();
  const { run, view } = useResult("users-result");
  const valid = /^[A-Za-z0-9_.-]{3,32}$/.test(username);
  return (
    <section className="card" aria-labelledby={`${uid}-t`}>
      <h2 id={`${uid}-t`}>Users</h2>
      <form onSubmit={(e) => e.preventDefault()}>
        <label htmlFor={`${uid}-u`}>Username</label>
        <input id={`${uid}-u`} value={username} onChange={(e) => setUsername(e.target.value.trim())} maxLength={32} />
        <label htmlFor={`${uid}-r`}>Reason (optional)</label>
        <input id={`${uid}-r`} value={reason} onChange={(e) => setReason(e.target.value)} maxLength={200} />
        <div className="row wrap">
          <button
            type="button"
            className="secondary"
            disabled={!valid}
            onClick={() =>
              void run(async () => {
                const res = await api.call(defs.disconnectUser, { username, reason });
                return `Closed ${res.sessions} session${res.sessions === 1 ? "" : "s"} of ${username}.`;
              })
            }
          >
            Disconnect
          </button>
          <button
            type="button"
            className="danger"
            disabled={!valid}
            onClick={() =>
              void run(async () => {
                await api.call(defs.setUserActive, { username, active: false });
                return `${username} is deactivated.`;
              })
            }
          >
            Deactivate
          </button>
          <button
            type="button"
            className="secondary"
            disabled={!valid}
            onClick={() =>
              void run(async () => {
                await api.call(defs.setUserActive, { username, active: true });
                return `${username} is active again.`;
              })
            }
          >
            Reactivate
          </button>
        </div>
        {canSetRole && (
          <div className="row wrap">
            <label htmlFor={`${uid}-role`}>Role</label>
            <select id={`${uid}-role`} value={role} onChange={(e) => setRole(Number(e.target.value) as Role)}>
              <option value={Role.USER}>user</option>
              <option value={Role.MODERATOR}>moderator</option>
              <option value={Role.ADMIN}>admin</option>
            </select>
            <button
              type="button"
              className="secondary"
              disabled={!valid}
              onClick={() =>
                void run(async () => {
                  await api.call(defs.setUserRole, { username, role });
                  return `${username}'s role changed; it applies to their next token.`;
                })
              }
            >
              Set role
            </button>
          </div>
        )}
      </form>
      {view}
    </section>
  );
}
