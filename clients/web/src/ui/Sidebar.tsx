import { useId, useState, type FormEvent, type ReactNode } from "react";
import { GENERAL, dmKey, parseKey, roomKey, type ConvKey } from "../../../shared/src/chat/model";
import { dmKeys, lastMessage, type ChatState, type RoomState } from "../../../shared/src/chat/store";
import { preview } from "../../../shared/src/chat/conversations";
import type { ChatCommands } from "./useChat";
import { roleName } from "./format";

const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;

function Unread({ n }: { n: number }) {
  if (n <= 0) return null;
  return (
    <span className="badge" data-testid="unread" aria-label={`${n} unread`}>
      {n > 99 ? "99+" : n}
    </span>
  );
}

/** roomCounts is "3 members · 1 online" (the online part once a room list told it). */
export function roomCounts(r: RoomState): string {
  const members = `${r.memberCount} member${r.memberCount === 1 ? "" : "s"}`;
  return r.onlineCount === undefined ? members : `${members} · ${r.onlineCount} online`;
}

/** Sidebar lists rooms, direct conversations and who is online. */
export function Sidebar({ state, cmd }: { state: ChatState; cmd: ChatCommands }) {
  const [room, setRoom] = useState("");
  const [roomError, setRoomError] = useState<string | null>(null);
  const uid = useId();

  function join(e: FormEvent) {
    e.preventDefault();
    const name = room.trim();
    if (!ROOM_RE.test(name)) {
      setRoomError("Use 1–64 letters, digits, _ or -.");
      return;
    }
    setRoomError(null);
    cmd.joinRoom(name);
    setRoom("");
  }

  const rooms = Object.values(state.rooms).sort((a, b) =>
    a.name === GENERAL ? -1 : b.name === GENERAL ? 1 : Number(b.joined) - Number(a.joined) || a.name.localeCompare(b.name),
  );
  const dms = dmKeys(state);
  const online = Object.keys(state.online).sort((a, b) => (a === state.me ? -1 : b === state.me ? 1 : a.localeCompare(b)));

  const convButton = (key: ConvKey, label: ReactNode, sub?: string) => {
    const c = state.convs[key];
    return (
      <button
        type="button"
        className={`conv ${state.active === key ? "active" : ""}`}
        aria-current={state.active === key ? "true" : undefined}
        onClick={() => cmd.open(key)}
        data-conv={key}
        title={sub}
      >
        <span className="conv-text">
          <span className="conv-label">{label}</span>
          {sub && (
            <span className="conv-sub" data-testid="conv-sub">
              {sub}
            </span>
          )}
        </span>
        <Unread n={c?.unread ?? 0} />
      </button>
    );
  };

  return (
    <aside className="sidebar" aria-label="Conversations">
      <section aria-labelledby={`${uid}-rooms`}>
        <h2 id={`${uid}-rooms`}>
          Rooms{" "}
          <button type="button" className="link small" onClick={cmd.listRooms} aria-label="Refresh rooms">
            ↻
          </button>
        </h2>
        <ul className="list" data-testid="rooms">
          {rooms.map((r) => (
            <li key={r.name} data-room={r.name}>
              {r.joined ? (
                convButton(roomKey(r.name), <># {r.name}</>, roomCounts(r))
              ) : (
                <div className="conv unjoined">
                  <span className="conv-text">
                    <span className="conv-label"># {r.name}</span>
                    <span className="conv-sub" data-testid="conv-sub">
                      {roomCounts(r)}
                    </span>
                  </span>
                  <button type="button" className="small" onClick={() => cmd.joinRoom(r.name)} aria-label={`Join ${r.name}`}>
                    Join
                  </button>
                </div>
              )}
            </li>
          ))}
        </ul>
        <form className="join" onSubmit={join}>
          <label htmlFor={`${uid}-join`}>Create or join a room</label>
          <div className="row">
            <input id={`${uid}-join`} value={room} onChange={(e) => setRoom(e.target.value)} placeholder="room-name" maxLength={64} />
            <button type="submit" className="small">
              Join
            </button>
          </div>
          {roomError && (
            <p className="error" role="alert">
              {roomError}
            </p>
          )}
        </form>
      </section>

      {dms.length > 0 && (
        <section aria-labelledby={`${uid}-dms`}>
          <h2 id={`${uid}-dms`}>Direct messages</h2>
          <ul className="list" data-testid="dms">
            {dms.map((k) => {
              const peer = parseKey(k).name;
              return (
                <li key={k} data-dm={peer}>
                  {convButton(
                    k,
                    <>
                      <span className={`presence ${peer in state.online ? "" : "off"}`} role="img" aria-label={peer in state.online ? "online" : "offline"} /> @ {peer}
                    </>,
                    preview(lastMessage(state.convs[k]), state.me) || undefined,
                  )}
                </li>
              );
            })}
          </ul>
        </section>
      )}

      <section aria-labelledby={`${uid}-online`}>
        <h2 id={`${uid}-online`}>Online ({state.onlineCount})</h2>
        <ul className="list" data-testid="online-users">
          {online.map((u) => (
            <li key={u} data-user={u}>
              {u === state.me ? (
                <div className="conv self">
                  <span className="conv-label">
                    <span className="presence" aria-hidden="true" /> {u} <span className="muted">(you)</span>
                  </span>
                </div>
              ) : (
                <button
                  type="button"
                  className="conv"
                  onClick={() => cmd.open(dmKey(u))}
                  aria-label={`Message ${u} privately`}
                  title={`Message ${u} privately`}
                >
                  <span className="conv-label">
                    <span className="presence" aria-hidden="true" /> {u}
                    {state.online[u] !== undefined && roleName(state.online[u]) !== "user" && (
                      <span className="role-pill">{roleName(state.online[u])}</span>
                    )}
                  </span>
                  <Unread n={state.convs[dmKey(u)]?.unread ?? 0} />
                </button>
              )}
            </li>
          ))}
        </ul>
        {state.onlineNext && (
          <button type="button" className="link small" data-testid="online-more" onClick={cmd.moreOnline}>
            Show more ({Math.max(0, state.onlineCount - online.length)} not listed)
          </button>
        )}
      </section>
    </aside>
  );
}
