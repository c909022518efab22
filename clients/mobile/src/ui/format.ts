// Pure helpers that turn state into the words the screens show.

import type { ChatState, ConvState, RoomState } from "../../../shared/src/chat/store";
import type { ConvKey } from "../../../shared/src/chat/model";
import { parseKey } from "../../../shared/src/chat/model";

/** clockTime renders ms since the epoch as local HH:MM. */
export function clockTime(ms: number): string {
  const d = new Date(ms);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

/** statusText is the connection bar's line. */
export function statusText(s: ChatState, now: number): string {
  const c = s.conn;
  const online = `${s.onlineCount} online`;
  switch (c.phase) {
    case "connected":
      return `Connected · ${online}`;
    case "connecting":
      return c.attempt > 0 ? `Connecting (attempt ${c.attempt + 1})…${c.detail ? ` ${c.detail}` : ""}` : "Connecting…";
    case "reconnecting": {
      const wait = c.retryAt && c.retryAt > now ? ` in ${Math.ceil((c.retryAt - now) / 1000)} s` : "";
      return `Reconnecting${wait} (attempt ${Math.max(1, c.attempt)})…${c.detail ? ` ${c.detail}` : ""}`;
    }
    case "stopped":
      return `Disconnected${c.detail ? `: ${c.detail}` : ""}`;
  }
}

/** restoredText reports the last reconnect's resume, or "" when there is none to show. */
export function restoredText(s: ChatState): string {
  const c = s.conn;
  if (c.phase !== "connected" || !c.reconnects || c.restoredAt === undefined) return "";
  if (c.restoredCount === undefined) return "Reconnected";
  const n = c.restoredCount;
  const more = c.restoredComplete === false ? " (older ones loaded from history)" : "";
  return `Reconnected · restored ${n} missed message${n === 1 ? "" : "s"}${more}`;
}

/** convTitle names a conversation for people: "# general", "@ bob". */
export function convTitle(key: ConvKey): string {
  const { kind, name } = parseKey(key);
  return kind === "room" ? `# ${name}` : `@ ${name}`;
}

/** conversationList orders the conversations for the list: general, rooms, then direct ones. */
export function conversationList(s: ChatState): ConvState[] {
  const all = Object.values(s.convs);
  const rank = (c: ConvState) => (c.key === "room:general" ? 0 : c.kind === "room" ? 1 : 2);
  return all.sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name));
}

/** totalUnread counts unread messages in every conversation. */
export function totalUnread(s: ChatState): number {
  return Object.values(s.convs).reduce((n, c) => n + c.unread, 0);
}

/** roomCounts is "3 members · 1 online" (the online part once a room list told it). */
export function roomCounts(r: RoomState): string {
  const members = `${r.memberCount} member${r.memberCount === 1 ? "" : "s"}`;
  return r.onlineCount === undefined ? members : `${members} · ${r.onlineCount} online`;
}
