// The signed-in app: a connection bar, tabs (Chat, Conversations, Online,
// Rooms) and the open conversation.

import React, { useEffect, useMemo, useRef, useState } from "react";
import { Pressable, ScrollView, StyleSheet, Text, TextInput, View } from "react-native";
import type { Role } from "../../../shared/src/gen/chat/v1/chat_pb";
import type { SessionManager } from "../auth/session";
import type { Api } from "../api/rest";
import type { WebSocketFactory } from "../live/connection";
import type { BackoffOptions } from "../../../shared/src/live/backoff";
import { GENERAL, dmKey, formatBytes, roomKey, type ChatMessage, type ConvKey, type FileInfo } from "../../../shared/src/chat/model";
import type { ChatState, ConvState } from "../../../shared/src/chat/store";
import { lastMessage, typingNames } from "../../../shared/src/chat/store";
import { preview } from "../../../shared/src/chat/conversations";
import { TypingThrottle, typingText } from "../../../shared/src/chat/typing";
import { useChat, type ChatCommands } from "./useChat";
import { clockTime, conversationList, convTitle, restoredText, roomCounts, statusText, totalUnread } from "./format";
import { colors } from "./theme";

type Tab = "chat" | "conversations" | "online" | "rooms";

export interface ChatScreenProps {
  session: SessionManager;
  api: Api;
  username: string;
  role: Role;
  onSignedOut: (reason: string) => void;
  onLogout: () => void;
  webSocket?: WebSocketFactory;
  backoff?: BackoffOptions;
}

export function ChatScreen(props: ChatScreenProps) {
  const [state, cmd] = useChat(props);
  const [tab, setTab] = useState<Tab>("chat");
  const openConv = (key: ConvKey) => {
    cmd.open(key);
    setTab("chat");
  };
  const unread = totalUnread(state);
  return (
    <View style={styles.root} testID={`chat-screen-${state.me}`}>
      <StatusBar state={state} onReconnect={cmd.reconnect} onLogout={props.onLogout} />
      <View style={styles.tabs} accessibilityRole="tablist">
        <TabButton label="Chat" selected={tab === "chat"} onPress={() => setTab("chat")} />
        <TabButton
          label={unread > 0 ? `Conversations (${unread})` : "Conversations"}
          a11y="Conversations"
          selected={tab === "conversations"}
          onPress={() => setTab("conversations")}
        />
        <TabButton label={`Online (${state.onlineCount})`} a11y="Online" selected={tab === "online"} onPress={() => setTab("online")} />
        <TabButton
          label="Rooms"
          selected={tab === "rooms"}
          onPress={() => {
            cmd.listRooms();
            setTab("rooms");
          }}
        />
      </View>
      {state.toasts.map((t) => (
        <Pressable key={t.id} onPress={() => cmd.dismissToast(t.id)} accessibilityLabel={`Dismiss: ${t.text}`} style={styles.toast}>
          <Text style={styles.toastText} testID="toast">
            {t.text}
          </Text>
        </Pressable>
      ))}
      {tab === "chat" ? <ConversationView state={state} cmd={cmd} /> : null}
      {tab === "conversations" ? <ConversationList state={state} open={openConv} /> : null}
      {tab === "online" ? <OnlineList state={state} open={openConv} refresh={cmd.refreshOnline} /> : null}
      {tab === "rooms" ? <RoomsView state={state} cmd={cmd} open={openConv} /> : null}
    </View>
  );
}

function TabButton({ label, a11y, selected, onPress }: { label: string; a11y?: string; selected: boolean; onPress: () => void }) {
  return (
    <Pressable
      style={[styles.tab, selected && styles.tabSelected]}
      onPress={onPress}
      accessibilityRole="tab"
      accessibilityLabel={`${a11y ?? label} tab`}
      accessibilityState={{ selected }}
    >
      <Text style={[styles.tabText, selected && styles.tabTextSelected]}>{label}</Text>
    </Pressable>
  );
}

export function StatusBar({ state, onReconnect, onLogout }: { state: ChatState; onReconnect: () => void; onLogout: () => void }) {
  const phase = state.conn.phase;
  const restored = restoredText(state);
  const color = phase === "connected" ? colors.ok : phase === "stopped" ? colors.error : colors.warn;
  return (
    <View style={styles.status} testID="status" accessibilityLiveRegion="polite">
      <View style={[styles.dot, { backgroundColor: color }]} />
      <View style={styles.statusBody}>
        <Text testID="status-text" style={styles.statusText}>
          {statusText(state, Date.now())}
        </Text>
        {restored ? (
          <Text testID="restored" style={styles.restored}>
            {restored}
          </Text>
        ) : null}
      </View>
      {phase !== "connected" ? (
        <Pressable onPress={onReconnect} accessibilityRole="button" accessibilityLabel="Reconnect now" style={styles.smallButton}>
          <Text style={styles.smallButtonText}>Retry</Text>
        </Pressable>
      ) : null}
      <Pressable onPress={onLogout} accessibilityRole="button" accessibilityLabel="Log out" style={styles.smallButton}>
        <Text style={styles.smallButtonText}>{state.me} · Log out</Text>
      </Pressable>
    </View>
  );
}

function ConversationView({ state, cmd }: { state: ChatState; cmd: ChatCommands }) {
  const key = state.active;
  const conv = state.convs[key];
  const [text, setText] = useState("");
  const keyRef = useRef(key);
  keyRef.current = key;
  const throttle = useMemo(() => new TypingThrottle((s) => cmd.typing(keyRef.current, s.typing)), [cmd]);
  // Leaving a conversation (or the screen) ends the typing indicator there.
  useEffect(() => () => throttle.stop(), [key, throttle]);
  const scroll = useRef<ScrollView>(null);
  const count = conv?.messages.length ?? 0;
  useEffect(() => {
    scroll.current?.scrollToEnd?.({ animated: false });
  }, [count]);

  const send = () => {
    const t = text.trim();
    if (!t) return;
    throttle.stop();
    cmd.sendText(key, t);
    setText("");
  };
  const typing = typingText(typingNames(conv, 0));
  return (
    <View style={styles.conversation} testID="conversation">
      <Text style={styles.convTitle} accessibilityRole="header" testID="conversation-title">
        {convTitle(key)}
      </Text>
      <ScrollView ref={scroll} style={styles.messages} testID="messages">
        {(conv?.messages ?? []).map((m) => (
          <MessageRow key={m.id || m.clientMsgId} m={m} mine={m.sender === state.me} download={cmd.download} />
        ))}
      </ScrollView>
      <Text style={styles.typing} testID="typing" accessibilityLiveRegion="polite">
        {typing}
      </Text>
      <View style={styles.composer}>
        <TextInput
          style={styles.composerInput}
          value={text}
          onChangeText={(t) => {
            setText(t);
            if (t) throttle.keystroke();
            else throttle.stop();
          }}
          onSubmitEditing={send}
          accessibilityLabel="Message"
          placeholder={`Message ${convTitle(key)}`}
          returnKeyType="send"
          maxLength={4000}
        />
        <Pressable onPress={send} accessibilityRole="button" accessibilityLabel="Send" style={styles.sendButton}>
          <Text style={styles.buttonText}>Send</Text>
        </Pressable>
      </View>
    </View>
  );
}

function MessageRow({ m, mine, download }: { m: ChatMessage; mine: boolean; download: (f: FileInfo) => Promise<Uint8Array> }) {
  return (
    <View style={[styles.message, mine && styles.mine]} testID="message" accessibilityLabel={`${m.sender} at ${clockTime(m.sentAt)}: ${m.text ?? m.file?.name ?? ""}`}>
      <Text style={styles.meta}>
        <Text style={styles.sender} testID="message-sender">
          {m.sender}
        </Text>
        {"  "}
        <Text testID="message-time">{clockTime(m.sentAt)}</Text>
        {m.pending ? "  sending…" : ""}
        {m.failed ? `  not sent: ${m.failed}` : ""}
      </Text>
      {m.text !== undefined ? <Text testID="message-text">{m.text}</Text> : null}
      {m.file ? <FileLink file={m.file} download={download} /> : null}
    </View>
  );
}

function FileLink({ file, download }: { file: FileInfo; download: (f: FileInfo) => Promise<Uint8Array> }) {
  const [status, setStatus] = useState("");
  const go = () => {
    setStatus("downloading…");
    download(file)
      .then((b) => setStatus(`downloaded ${formatBytes(b.byteLength)}`))
      .catch((err: Error) => setStatus(`download failed: ${err.message}`));
  };
  return (
    <View>
      <Pressable onPress={go} accessibilityRole="link" accessibilityLabel={`Download ${file.name}`}>
        <Text style={styles.link}>
          📎 {file.name} ({formatBytes(file.size)})
        </Text>
      </Pressable>
      {status ? <Text testID="download-status">{status}</Text> : null}
    </View>
  );
}

function ConversationList({ state, open }: { state: ChatState; open: (k: ConvKey) => void }) {
  return (
    <ScrollView testID="conversation-list">
      {conversationList(state).map((c: ConvState) => (
        <Pressable
          key={c.key}
          onPress={() => open(c.key)}
          style={styles.row}
          accessibilityRole="button"
          accessibilityLabel={`Open ${convTitle(c.key)}${c.unread ? `, ${c.unread} unread` : ""}`}
        >
          <View style={styles.grow}>
            <Text style={styles.rowText}>{convTitle(c.key)}</Text>
            {c.messages.length > 0 ? (
              <Text style={styles.muted} numberOfLines={1} testID={`preview-${c.key}`}>
                {preview(lastMessage(c), state.me)}
              </Text>
            ) : null}
          </View>
          {c.unread > 0 ? (
            <Text style={styles.badge} testID={`unread-${c.key}`}>
              {c.unread}
            </Text>
          ) : null}
        </Pressable>
      ))}
    </ScrollView>
  );
}

function OnlineList({ state, open, refresh }: { state: ChatState; open: (k: ConvKey) => void; refresh: () => void }) {
  const names = Object.keys(state.online).sort();
  return (
    <ScrollView testID="online-list">
      <Pressable onPress={refresh} accessibilityRole="button" accessibilityLabel="Refresh online users" style={styles.row}>
        <Text style={styles.muted}>{state.onlineCount} online · refresh</Text>
      </Pressable>
      {names.map((n) =>
        n === state.me ? (
          <View key={n} style={styles.row}>
            <Text style={styles.rowText}>{n} (you)</Text>
          </View>
        ) : (
          <Pressable
            key={n}
            onPress={() => open(dmKey(n))}
            style={styles.row}
            accessibilityRole="button"
            accessibilityLabel={`Message ${n}`}
          >
            <Text style={styles.rowText}>{n}</Text>
            {state.convs[dmKey(n)]?.unread ? <Text style={styles.badge}>{state.convs[dmKey(n)].unread}</Text> : null}
          </Pressable>
        ),
      )}
    </ScrollView>
  );
}

function RoomsView({ state, cmd, open }: { state: ChatState; cmd: ChatCommands; open: (k: ConvKey) => void }) {
  const [name, setName] = useState("");
  const [error, setError] = useState("");
  const rooms = Object.values(state.rooms).sort((a, b) => (a.name === GENERAL ? -1 : b.name === GENERAL ? 1 : a.name.localeCompare(b.name)));
  const create = () => {
    const n = name.trim();
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(n)) {
      setError("Room names are 1-64 letters, digits, _ or -");
      return;
    }
    setError("");
    setName("");
    cmd.joinRoom(n);
    open(roomKey(n));
  };
  return (
    <ScrollView testID="rooms">
      <View style={styles.composer}>
        <TextInput
          style={styles.composerInput}
          value={name}
          onChangeText={setName}
          onSubmitEditing={create}
          accessibilityLabel="New room name"
          placeholder="room name"
          autoCapitalize="none"
          autoCorrect={false}
        />
        <Pressable onPress={create} accessibilityRole="button" accessibilityLabel="Create or join room" style={styles.sendButton}>
          <Text style={styles.buttonText}>Join</Text>
        </Pressable>
      </View>
      {error ? (
        <Text style={styles.errorText} accessibilityRole="alert">
          {error}
        </Text>
      ) : null}
      {rooms.map((r) => (
        <View key={r.name} style={styles.row} testID={`room-${r.name}`}>
          <Pressable
            style={styles.grow}
            onPress={() => {
              if (!r.joined) cmd.joinRoom(r.name);
              open(roomKey(r.name));
            }}
            accessibilityRole="button"
            accessibilityLabel={r.joined ? `Open room ${r.name}` : `Join room ${r.name}`}
          >
            <Text style={styles.rowText} testID={`room-counts-${r.name}`}>
              # {r.name} · {roomCounts(r)}
            </Text>
          </Pressable>
          {r.joined && r.name !== GENERAL ? (
            <Pressable onPress={() => cmd.leaveRoom(r.name)} accessibilityRole="button" accessibilityLabel={`Leave room ${r.name}`} style={styles.smallButton}>
              <Text style={styles.smallButtonText}>Leave</Text>
            </Pressable>
          ) : null}
          {!r.joined ? (
            <Pressable
              onPress={() => {
                cmd.joinRoom(r.name);
                open(roomKey(r.name));
              }}
              accessibilityRole="button"
              accessibilityLabel={`Join ${r.name}`}
              style={styles.smallButton}
            >
              <Text style={styles.smallButtonText}>Join</Text>
            </Pressable>
          ) : null}
        </View>
      ))}
    </ScrollView>
  );
}

const styles = StyleSheet.create({
  root: { flex: 1, backgroundColor: colors.bg },
  status: { flexDirection: "row", alignItems: "center", padding: 8, borderBottomWidth: 1, borderColor: colors.border, gap: 8 },
  statusBody: { flex: 1 },
  statusText: { color: colors.text },
  restored: { color: colors.ok, fontSize: 12 },
  dot: { width: 10, height: 10, borderRadius: 5 },
  smallButton: { paddingHorizontal: 8, paddingVertical: 4, borderRadius: 4, borderWidth: 1, borderColor: colors.border },
  smallButtonText: { color: colors.text, fontSize: 12 },
  tabs: { flexDirection: "row", borderBottomWidth: 1, borderColor: colors.border },
  tab: { flex: 1, padding: 10, alignItems: "center" },
  tabSelected: { borderBottomWidth: 2, borderColor: colors.accent },
  tabText: { color: colors.muted, fontSize: 13 },
  tabTextSelected: { color: colors.accent, fontWeight: "600" },
  toast: { backgroundColor: "#fff3e0", padding: 8 },
  toastText: { color: colors.warn },
  conversation: { flex: 1 },
  convTitle: { fontSize: 18, fontWeight: "600", padding: 10, color: colors.text },
  messages: { flex: 1, paddingHorizontal: 10 },
  message: { backgroundColor: colors.bubble, borderRadius: 8, padding: 8, marginVertical: 3 },
  mine: { backgroundColor: colors.mine },
  meta: { fontSize: 12, color: colors.muted },
  sender: { fontWeight: "600", color: colors.text },
  link: { color: colors.accent, textDecorationLine: "underline" },
  typing: { minHeight: 18, paddingHorizontal: 10, fontStyle: "italic", color: colors.muted },
  composer: { flexDirection: "row", padding: 8, gap: 8 },
  composerInput: { flex: 1, borderWidth: 1, borderColor: colors.border, borderRadius: 6, padding: 8, color: colors.text },
  sendButton: { backgroundColor: colors.accent, borderRadius: 6, paddingHorizontal: 14, justifyContent: "center" },
  buttonText: { color: "#fff", fontWeight: "600" },
  row: { flexDirection: "row", alignItems: "center", padding: 12, borderBottomWidth: 1, borderColor: colors.border, gap: 8 },
  rowText: { flex: 1, color: colors.text },
  grow: { flex: 1 },
  muted: { color: colors.muted },
  badge: { backgroundColor: colors.accent, color: "#fff", borderRadius: 10, paddingHorizontal: 7, overflow: "hidden" },
  errorText: { color: colors.error, paddingHorizontal: 10 },
});
