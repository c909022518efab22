import { useEffect, useState } from "react";
import type { ConnState } from "../../../shared/src/chat/store";

const RESTORED_SHOW_MS = 6_000;

/** StatusBar shows the stream's state and how many users are online. */
export function StatusBar({ conn, onlineCount, onReconnect }: { conn: ConnState; onlineCount: number; onReconnect: () => void }) {
  const [now, setNow] = useState(() => Date.now());
  const ticking = conn.phase === "reconnecting" || conn.phase === "connecting" || (conn.restoredAt !== undefined && now - conn.restoredAt < RESTORED_SHOW_MS);
  useEffect(() => {
    if (!ticking) return;
    const t = setInterval(() => setNow(Date.now()), 500);
    return () => clearInterval(t);
  }, [ticking]);
  // Re-render when a restore happens so the banner shows immediately.
  useEffect(() => setNow(Date.now()), [conn.restoredAt, conn.phase]);

  let text: string;
  let tone: string;
  switch (conn.phase) {
    case "connected": {
      tone = "ok";
      text = "Connected";
      const recent = conn.restoredAt !== undefined && now - conn.restoredAt < RESTORED_SHOW_MS;
      if (recent && wasReconnect(conn)) {
        const n = conn.restoredCount;
        text = "Restored";
        if (n !== undefined) text += ` · ${n} missed message${n === 1 ? "" : "s"}`;
        if (conn.restoredComplete === false) text += " (more in history)";
      }
      break;
    }
    case "connecting":
      tone = "warn";
      text = conn.attempt > 0 ? `Connecting… (retry ${conn.attempt}${retryIn(conn, now)})` : "Connecting…";
      break;
    case "reconnecting":
      tone = "warn";
      text = conn.attempt > 0 ? `Reconnecting… (attempt ${conn.attempt}${retryIn(conn, now)})` : "Reconnecting…";
      break;
    case "stopped":
      tone = "bad";
      text = "Disconnected";
      break;
  }
  return (
    <div className={`statusbar ${tone}`} data-testid="status" data-phase={conn.phase} data-session={conn.sessionId} role="status" aria-live="polite">
      <span className="dot" aria-hidden="true" />
      <span data-testid="status-text">{text}</span>
      {conn.detail && conn.phase !== "connected" && <span className="detail">— {conn.detail}</span>}
      {conn.phase === "stopped" && (
        <button type="button" className="small" onClick={onReconnect}>
          Reconnect
        </button>
      )}
      <span className="online-count" data-testid="online-count">
        {onlineCount} online
      </span>
    </div>
  );
}

function retryIn(conn: ConnState, now: number): string {
  if (!conn.retryAt) return "";
  const s = Math.ceil((conn.retryAt - now) / 1000);
  return s > 0 ? `, retry in ${s}s` : "";
}

// A StateRestored after the first Welcome is the automatic restore of stored
// rooms on login, not a reconnect, and says nothing worth a banner.
function wasReconnect(conn: ConnState): boolean {
  return conn.reconnects !== undefined && conn.reconnects > 0;
}
