// The chat state and the pure reducer that folds server events into it. The
// reducer never talks to the network; LiveConnection feeds it ServerEvents and
// the UI feeds it local actions (open a conversation, a pending send).
//
// Invariants: a conversation's messages are sorted by seq (pending ones,
// seq 0, last), and no two share a server id or a client_msg_id, so a replay
// after a reconnect, a resume overlapping recent messages, or a retried send
// never shows a message twice.

import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Role, ServerEventSchema } from "../gen/chat/v1/chat_pb";
import type { ConversationSummary, ServerEvent } from "../gen/chat/v1/chat_pb";
import { summaryKey } from "./conversations";
import { GENERAL, dmKey, fromWire, keyOf, parseKey, peerKeyOf, roomKey } from "./model";
import type { ChatMessage, ConvKey } from "./model";

/**
 * QUIET_PREFIX starts the request id of commands whose failure the user need
 * not hear about (typing indicators): their in-band errors are dropped.
 */
export const QUIET_PREFIX = "q";

/**
 * GAP_PREFIX starts the request id of the Resume a gap fill falls back to
 * (see ./gaps). Its answers fill a gap on a stream that stayed up: they are
 * not a reconnect's restore, and its errors are quiet too.
 */
export const GAP_PREFIX = `${QUIET_PREFIX}gap`;

/** MAX_MESSAGES caps what one conversation keeps in memory. */
export const MAX_MESSAGES = 500;
/** TYPING_TTL_MS hides a typing indicator whose stop never arrived. */
export const TYPING_TTL_MS = 6_000;

export interface ConvState {
  key: ConvKey;
  kind: "room" | "dm";
  name: string;
  messages: ChatMessage[];
  /** lastSeq is the highest sequence seen: the resume cursor. */
  lastSeq: number;
  unread: number;
  /** typing maps a username to when its indicator expires (ms). */
  typing: Record<string, number>;
  /** historyLoaded is set once GetHistory or RecentMessages filled it. */
  historyLoaded: boolean;
}

export interface RoomState {
  name: string;
  /** memberCount counts the room's stored members, online or not. */
  memberCount: number;
  /**
   * onlineCount counts members with a live session, as of the last room
   * list; undefined until one arrived (live events carry no online count).
   */
  onlineCount?: number;
  joined: boolean;
}

export type ConnPhase = "connecting" | "connected" | "reconnecting" | "stopped";

export interface ConnState {
  phase: ConnPhase;
  /** attempt counts failed tries since the last good connection. */
  attempt: number;
  /** retryAt is when the next reconnect attempt starts (ms). */
  retryAt?: number;
  /** detail says why the stream ended or what the server announced. */
  detail?: string;
  /** everConnected is set after the first Welcome. */
  everConnected: boolean;
  /** restoredAt/restoredCount report the last reconnect's resume. */
  restoredAt?: number;
  restoredCount?: number;
  /** restoredComplete is false when the server replayed only part. */
  restoredComplete?: boolean;
  sessionId?: string;
  /** reconnects counts Welcomes after the first one. */
  reconnects?: number;
}

export interface Broadcast {
  id: string;
  from: string;
  text: string;
  room: string;
  sentAt: number;
}

export interface Toast {
  id: string;
  text: string;
}

export interface ChatState {
  me: string;
  role: Role;
  conn: ConnState;
  /**
   * online holds the online users loaded so far: the connect snapshot's
   * first page, the pages fetched since, and live arrivals.
   */
  online: Record<string, Role>;
  /** onlineCount counts everyone online, listed or not. */
  onlineCount: number;
  /** onlineNext is the page token of the next page of online users; "" when all are loaded. */
  onlineNext: string;
  /**
   * onlineStale is set when the server sent presence as a count only
   * (names_omitted): the list may be out of date and should be fetched again.
   */
  onlineStale: boolean;
  rooms: Record<string, RoomState>;
  convs: Record<ConvKey, ConvState>;
  active: ConvKey;
  broadcasts: Broadcast[];
  toasts: Toast[];
}

export type Action =
  | { type: "server"; ev: ServerEvent; now: number }
  | { type: "conn"; conn: Partial<ConnState> }
  | { type: "open"; key: ConvKey }
  | { type: "pending"; key: ConvKey; msg: ChatMessage }
  | { type: "history"; key: ConvKey; messages: ChatMessage[] }
  /**
   * gapFill adds the messages a gap fill fetched (./gaps): missed live
   * messages, so they count as unread, but not the conversation's history.
   */
  | { type: "gapFill"; key: ConvKey; messages: ChatMessage[] }
  /**
   * conversations adds the stored conversation list (ListConversations):
   * each one appears with its last message, and its rooms count as joined.
   */
  | { type: "conversations"; summaries: ConversationSummary[] }
  /** onlinePage adds a ListOnlineUsers page; reset replaces the list (a refresh from the first page). */
  | { type: "onlinePage"; users: { username: string; role: Role }[]; next: string; count: number; reset: boolean }
  | { type: "tick"; now: number }
  | { type: "dismissBroadcast"; id: string }
  | { type: "toast"; text: string; now: number }
  | { type: "dismissToast"; id: string };

export function emptyConv(key: ConvKey): ConvState {
  const { kind, name } = parseKey(key);
  return { key, kind, name, messages: [], lastSeq: 0, unread: 0, typing: {}, historyLoaded: false };
}

export function initialState(me: string, role: Role): ChatState {
  const general = roomKey(GENERAL);
  return {
    me,
    role,
    conn: { phase: "connecting", attempt: 0, everConnected: false },
    online: {},
    onlineCount: 0,
    onlineNext: "",
    onlineStale: false,
    rooms: { [GENERAL]: { name: GENERAL, memberCount: 0, joined: true } },
    convs: { [general]: emptyConv(general) },
    active: general,
    broadcasts: [],
    toasts: [],
  };
}

/**
 * mergeMessages adds incoming messages to a conversation's list, replacing a
 * pending message with its stored version, and reports how many were new.
 */
export function mergeMessages(
  list: readonly ChatMessage[],
  incoming: readonly ChatMessage[],
): { messages: ChatMessage[]; added: ChatMessage[] } {
  const byId = new Map<string, number>();
  const byClient = new Map<string, number>();
  const out = list.slice();
  out.forEach((m, i) => {
    if (m.id) byId.set(m.id, i);
    if (m.clientMsgId) byClient.set(m.clientMsgId, i);
  });
  const added: ChatMessage[] = [];
  for (const m of incoming) {
    if (m.id && byId.has(m.id)) {
      // Already shown: if it was our pending copy, settle it.
      const i = byId.get(m.id)!;
      if (out[i].pending) out[i] = { ...m };
      continue;
    }
    const ci = m.clientMsgId ? byClient.get(m.clientMsgId) : undefined;
    if (ci !== undefined && out[ci].sender === m.sender) {
      out[ci] = { ...m };
      if (m.id) byId.set(m.id, ci);
      continue;
    }
    out.push(m);
    const i = out.length - 1;
    if (m.id) byId.set(m.id, i);
    if (m.clientMsgId) byClient.set(m.clientMsgId, i);
    added.push(m);
  }
  const sorted = out;
  sorted.sort((a, b) => seqOrder(a) - seqOrder(b) || a.sentAt - b.sentAt);
  const messages = sorted.length > MAX_MESSAGES ? sorted.slice(sorted.length - MAX_MESSAGES) : sorted;
  return { messages, added };
}

function seqOrder(m: ChatMessage): number {
  return m.seq > 0 ? m.seq : Number.MAX_SAFE_INTEGER;
}

function maxSeq(list: readonly ChatMessage[], start: number): number {
  let s = start;
  for (const m of list) if (m.seq > s) s = m.seq;
  return s;
}

function withConv(state: ChatState, key: ConvKey, fn: (c: ConvState) => ConvState): ChatState {
  const cur = state.convs[key] ?? emptyConv(key);
  return { ...state, convs: { ...state.convs, [key]: fn(cur) } };
}

function addMessages(state: ChatState, key: ConvKey, incoming: ChatMessage[], countUnread: boolean, history: boolean): ChatState {
  return withConv(state, key, (c) => {
    const { messages, added } = mergeMessages(c.messages, incoming);
    let unread = c.unread;
    if (countUnread && key !== state.active) {
      unread += added.filter((m) => m.sender !== state.me).length;
    }
    const typing = { ...c.typing };
    for (const m of added) delete typing[m.sender];
    return {
      ...c,
      messages,
      lastSeq: maxSeq(incoming, c.lastSeq),
      unread,
      typing,
      historyLoaded: c.historyLoaded || history,
    };
  });
}

function updateRoom(state: ChatState, name: string, patch: Partial<RoomState>): ChatState {
  const cur = state.rooms[name] ?? { name, memberCount: 0, joined: false };
  return { ...state, rooms: { ...state.rooms, [name]: { ...cur, ...patch } } };
}

let toastSeq = 0;

/** reduce folds one action into the state. It is pure apart from toast ids. */
export function reduce(state: ChatState, action: Action): ChatState {
  switch (action.type) {
    case "conn":
      return { ...state, conn: { ...state.conn, ...action.conn } };
    case "open": {
      const s = withConv(state, action.key, (c) => ({ ...c, unread: 0 }));
      return { ...s, active: action.key };
    }
    case "pending":
      return withConv(state, action.key, (c) => ({ ...c, messages: [...c.messages, action.msg] }));
    case "history":
      return addMessages(state, action.key, action.messages, false, true);
    case "gapFill":
      return addMessages(state, action.key, action.messages, true, false);
    case "conversations": {
      let s = state;
      for (const sum of action.summaries) {
        const key = summaryKey(sum);
        if (!key) continue;
        // Only the last message: historyLoaded stays false, so opening the
        // conversation still loads its history (merging dedupes this one).
        s = addMessages(s, key, sum.lastMessage ? [fromWire(sum.lastMessage)] : [], false, false);
        const { kind, name } = parseKey(key);
        if (kind === "room" && !s.rooms[name]?.joined) s = updateRoom(s, name, { joined: true });
      }
      return s;
    }
    case "tick": {
      let changed = false;
      const convs: Record<ConvKey, ConvState> = {};
      for (const [k, c] of Object.entries(state.convs)) {
        const live = Object.entries(c.typing).filter(([, exp]) => exp > action.now);
        if (live.length !== Object.keys(c.typing).length) {
          changed = true;
          convs[k] = { ...c, typing: Object.fromEntries(live) };
        } else {
          convs[k] = c;
        }
      }
      return changed ? { ...state, convs } : state;
    }
    case "onlinePage": {
      const online: Record<string, Role> = action.reset ? {} : { ...state.online };
      for (const u of action.users) online[u.username] = u.role;
      if (action.reset && state.me) online[state.me] = state.online[state.me] ?? state.role;
      return {
        ...state,
        online,
        onlineCount: action.count || Object.keys(online).length,
        onlineNext: action.next,
        onlineStale: action.reset ? false : state.onlineStale,
      };
    }
    case "dismissBroadcast":
      return { ...state, broadcasts: state.broadcasts.filter((b) => b.id !== action.id) };
    case "toast":
      return { ...state, toasts: [...state.toasts.slice(-4), { id: `t${++toastSeq}`, text: action.text }] };
    case "dismissToast":
      return { ...state, toasts: state.toasts.filter((t) => t.id !== action.id) };
    case "server":
      return serverEvent(state, action.ev, action.now);
  }
}

function serverEvent(state: ChatState, ev: ServerEvent, now: number): ChatState {
  const e = ev.event;
  switch (e.case) {
    case "welcome": {
      const u = e.value.user;
      return {
        ...state,
        me: u?.username || state.me,
        role: u?.role ?? state.role,
        conn: {
          ...state.conn,
          phase: "connected",
          attempt: 0,
          retryAt: undefined,
          detail: undefined,
          everConnected: true,
          sessionId: e.value.sessionId,
          reconnects: state.conn.everConnected ? (state.conn.reconnects ?? 0) + 1 : 0,
          // A reconnect is "restored" at once; StateRestored adds the count.
          restoredAt: state.conn.everConnected ? now : undefined,
          restoredCount: undefined,
          restoredComplete: undefined,
        },
      };
    }
    case "onlineUsers": {
      // The first page only, when many are online; the rest is paged with
      // ListOnlineUsers from nextPageToken.
      const online: Record<string, Role> = {};
      for (const u of e.value.users) online[u.username] = u.role;
      if (state.me && !(state.me in online)) online[state.me] = state.role; // this session is online
      return {
        ...state,
        online,
        onlineCount: e.value.onlineCount || Object.keys(online).length,
        onlineNext: e.value.nextPageToken,
        onlineStale: false,
      };
    }
    case "userOnline": {
      const u = e.value.user;
      if (!u) return state;
      const online = { ...state.online, [u.username]: u.role };
      return { ...state, online, onlineCount: e.value.onlineCount || Object.keys(online).length };
    }
    case "presenceChanged": {
      // Above the server's limit only the count comes: the names we hold
      // may be stale, so the list is fetched again (see useChat).
      if (e.value.namesOmitted) return { ...state, onlineCount: e.value.onlineCount, onlineStale: true };
      // A coalesced burst: the same as one userOnline/userOffline each.
      const { online, offline, onlineCount } = e.value;
      let s = state;
      for (const user of online) {
        s = serverEvent(s, create(ServerEventSchema, { event: { case: "userOnline", value: { user, onlineCount } } }), now);
      }
      for (const user of offline) {
        s = serverEvent(s, create(ServerEventSchema, { event: { case: "userOffline", value: { user, onlineCount } } }), now);
      }
      return s;
    }
    case "userOffline": {
      const u = e.value.user;
      if (!u) return state;
      const online = { ...state.online };
      delete online[u.username];
      let s: ChatState = { ...state, online, onlineCount: e.value.onlineCount || Object.keys(online).length };
      // Whoever left stopped typing everywhere.
      for (const [k, c] of Object.entries(s.convs)) {
        if (u.username in c.typing) {
          s = withConv(s, k, (cc) => {
            const typing = { ...cc.typing };
            delete typing[u.username];
            return { ...cc, typing };
          });
        }
      }
      return s;
    }
    case "recentMessages": {
      // Here, unlike in Message, a direct conversation's `user` is the
      // reader's peer.
      const key = peerKeyOf(e.value.conversation);
      if (!key) return state;
      // What a reconnect or a gap's Resume replays was missed while this
      // page was open: unread. What the first connect brings is history
      // this reader may have seen.
      const replay = (state.conn.reconnects ?? 0) > 0 || ev.requestId.startsWith(GAP_PREFIX);
      return addMessages(state, key, e.value.messages.map(fromWire), replay, true);
    }
    case "message": {
      const m = fromWire(e.value);
      const key = keyOf(e.value.conversation, state.me, m.sender);
      if (!key) return state;
      let s = addMessages(state, key, [m], true, false);
      if (key.startsWith("room:") && !s.rooms[parseKey(key).name]) {
        s = updateRoom(s, parseKey(key).name, { joined: true });
      }
      return s;
    }
    case "ack": {
      const a = e.value;
      const key = a.conversation ? keyOf(a.conversation, state.me, state.me) : findPending(state, ev.requestId);
      if (!key || !state.convs[key]) return state;
      return withConv(state, key, (c) => {
        const i = c.messages.findIndex((m) => m.pending && m.requestId === ev.requestId);
        if (i < 0) return c;
        const settled: ChatMessage = { ...c.messages[i], id: a.messageId, seq: Number(a.seq), pending: false, requestId: undefined };
        const rest = c.messages.filter((_, j) => j !== i);
        const { messages } = mergeMessages(rest, [settled]);
        return { ...c, messages, lastSeq: Math.max(c.lastSeq, settled.seq) };
      });
    }
    case "error": {
      if (ev.requestId.startsWith(QUIET_PREFIX)) return state;
      const key = findPending(state, ev.requestId);
      const text = e.value.message || "request failed";
      if (key) {
        return withConv(state, key, (c) => ({
          ...c,
          messages: c.messages.map((m) =>
            m.pending && m.requestId === ev.requestId ? { ...m, pending: false, failed: text } : m,
          ),
        }));
      }
      return reduce(state, { type: "toast", text, now });
    }
    case "roomJoined": {
      const r = e.value;
      const s = updateRoom(state, r.room, { memberCount: r.memberCount || r.members.length, joined: true });
      return withConv(s, roomKey(r.room), (c) => c);
    }
    case "roomLeft": {
      const r = e.value.room;
      const cur = state.rooms[r];
      let s = updateRoom(state, r, { joined: false, memberCount: Math.max(0, (cur?.memberCount ?? 1) - 1) });
      const convs = { ...s.convs };
      delete convs[roomKey(r)];
      s = { ...s, convs };
      if (s.active === roomKey(r)) s = reduce(s, { type: "open", key: roomKey(GENERAL) });
      return s;
    }
    case "memberJoined":
      return updateRoom(state, e.value.room, { memberCount: e.value.memberCount });
    case "memberLeft":
      return updateRoom(state, e.value.room, { memberCount: e.value.memberCount });
    case "roomMembersChanged":
      // A burst of joins and leaves, or (names_omitted) only the count of a
      // large room. Rooms keep counts, not member lists, so the count is
      // all there is to update either way.
      return updateRoom(state, e.value.room, { memberCount: e.value.memberCount });
    case "roomsList": {
      const rooms: Record<string, RoomState> = {};
      for (const r of e.value.rooms) {
        rooms[r.name] = { name: r.name, memberCount: r.memberCount, onlineCount: r.onlineCount, joined: r.joined };
      }
      if (!rooms[GENERAL]) rooms[GENERAL] = { ...(state.rooms[GENERAL] ?? { name: GENERAL, memberCount: 0 }), joined: true };
      return { ...state, rooms };
    }
    case "typing": {
      const t = e.value;
      if (t.username === state.me) return state;
      const key = keyOf(t.conversation, state.me, t.username);
      if (!key) return state;
      if (!t.typing && !state.convs[key]?.typing[t.username]) return state;
      return withConv(state, key, (c) => {
        const typing = { ...c.typing };
        if (t.typing) typing[t.username] = now + TYPING_TTL_MS;
        else delete typing[t.username];
        return { ...c, typing };
      });
    }
    case "adminBroadcast": {
      const b = e.value;
      const sentAt = b.sentAt ? timestampMs(b.sentAt) : now;
      const item: Broadcast = { id: `b${sentAt}-${state.broadcasts.length}-${b.from}`, from: b.from, text: b.text, room: b.room, sentAt };
      return { ...state, broadcasts: [...state.broadcasts.slice(-4), item] };
    }
    case "stateRestored": {
      let s = state;
      for (const r of e.value.rooms) {
        s = updateRoom(s, r, { joined: true });
        s = withConv(s, roomKey(r), (c) => c);
      }
      // A gap's Resume is no reconnect to report.
      if (ev.requestId.startsWith(GAP_PREFIX)) return s;
      return {
        ...s,
        conn: {
          ...s.conn,
          restoredAt: now,
          restoredCount: e.value.messagesReplayed,
          restoredComplete: e.value.complete,
        },
      };
    }
    case "serverNotice":
      return { ...state, conn: { ...state.conn, detail: e.value.message || state.conn.detail } };
    case "disconnect":
      return { ...state, conn: { ...state.conn, detail: e.value.reason || state.conn.detail } };
    case "pong":
    case "tokenRefreshed":
    case undefined:
      return state;
  }
}

function findPending(state: ChatState, requestId: string): ConvKey | null {
  if (!requestId) return null;
  for (const c of Object.values(state.convs)) {
    if (c.messages.some((m) => m.pending && m.requestId === requestId)) return c.key;
  }
  return null;
}

/** cursors lists the resume point of every conversation that has one. */
export function cursorsOf(state: ChatState): { key: ConvKey; lastSeq: number }[] {
  return Object.values(state.convs)
    .filter((c) => c.lastSeq > 0 || c.kind === "room")
    .map((c) => ({ key: c.key, lastSeq: c.lastSeq }));
}

/** typingNames lists who is typing in a conversation, oldest first. */
export function typingNames(c: ConvState | undefined, now: number): string[] {
  if (!c) return [];
  return Object.entries(c.typing)
    .filter(([, exp]) => exp > now)
    .sort((a, b) => a[1] - b[1])
    .map(([name]) => name);
}

/** lastMessage is a conversation's newest message, pending ones included. */
export function lastMessage(c: ConvState | undefined): ChatMessage | undefined {
  return c?.messages[c.messages.length - 1];
}

/**
 * dmKeys lists direct conversations for the sidebar: the most recently
 * active first, then by name (those without messages last).
 */
export function dmKeys(state: ChatState): ConvKey[] {
  const at = (k: ConvKey) => lastMessage(state.convs[k])?.sentAt ?? 0;
  return Object.keys(state.convs)
    .filter((k) => k.startsWith("dm:"))
    .sort((a, b) => at(b) - at(a) || a.localeCompare(b));
}

export { dmKey, roomKey };
