import { useEffect, useId, useLayoutEffect, useMemo, useRef, useState, type KeyboardEvent } from "react";
import type { SessionManager } from "../auth/session";
import { GENERAL, formatBytes, parseKey, type ChatMessage, type FileInfo } from "../../../shared/src/chat/model";
import { emptyConv, typingNames, type ChatState } from "../../../shared/src/chat/store";
import { TypingThrottle, typingText } from "../../../shared/src/chat/typing";
import { downloadFile, uploadFile, type UploadHandle } from "../chat/files";
import type { ChatCommands } from "./useChat";
import { fullTime, shortTime } from "./format";

/** ConversationView is the open conversation: messages, typing, composer. */
export function ConversationView({ state, cmd, session }: { state: ChatState; cmd: ChatCommands; session: SessionManager }) {
  const conv = state.convs[state.active] ?? emptyConv(state.active);
  const { kind, name } = parseKey(conv.key);
  const title = kind === "room" ? `# ${name}` : `@ ${name}`;
  const room = kind === "room" ? state.rooms[name] : undefined;
  const [, force] = useState(0);
  const now = Date.now();
  const typers = typingNames(conv, now);

  // Re-render when the earliest typing indicator expires.
  useEffect(() => {
    const exp = Object.values(conv.typing);
    if (exp.length === 0) return;
    const t = setTimeout(() => force((x) => x + 1), Math.max(50, Math.min(...exp) - Date.now() + 10));
    return () => clearTimeout(t);
  }, [conv.typing]);

  return (
    <main className="conversation" aria-labelledby="conv-title" data-testid="conversation" data-conv={conv.key}>
      <header className="conv-header">
        <h1 id="conv-title">{title}</h1>
        {room && (
          <span className="muted">
            <span data-testid="member-count">
              {room.memberCount} member{room.memberCount === 1 ? "" : "s"}
            </span>
            {room.onlineCount !== undefined && <span data-testid="room-online"> · {room.onlineCount} online</span>}
          </span>
        )}
        {kind === "dm" && (
          <span className="muted">{name in state.online ? "online" : "offline"} · private conversation</span>
        )}
        {kind === "room" && name !== GENERAL && room?.joined && (
          <button type="button" className="small secondary" onClick={() => cmd.leaveRoom(name)}>
            Leave room
          </button>
        )}
      </header>
      <MessageList messages={conv.messages} me={state.me} session={session} onError={cmd.toast} convKey={conv.key} />
      <div className="typing" data-testid="typing" aria-live="polite">
        {typingText(typers)}
      </div>
      <Composer key={conv.key} convKey={conv.key} label={kind === "room" ? `Message #${name}` : `Message @${name}`} cmd={cmd} session={session} />
    </main>
  );
}

function MessageList({
  messages,
  me,
  session,
  onError,
  convKey,
}: {
  messages: ChatMessage[];
  me: string;
  session: SessionManager;
  onError: (t: string) => void;
  convKey: string;
}) {
  const ref = useRef<HTMLOListElement>(null);
  // stick keeps the view at the newest message unless the reader scrolled up.
  const stick = useRef(true);
  const shownKey = useRef(convKey);

  useLayoutEffect(() => {
    const el = ref.current;
    if (shownKey.current !== convKey) {
      shownKey.current = convKey;
      stick.current = true;
    }
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [messages, convKey]);

  return (
    <ol
      className="messages"
      ref={ref}
      data-testid="messages"
      aria-label="Messages"
      aria-live="polite"
      aria-relevant="additions"
      tabIndex={0}
      onScroll={(e) => {
        const el = e.currentTarget;
        stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
      }}
    >
      {messages.length === 0 && <li className="empty muted">No messages yet. Say hello!</li>}
      {messages.map((m) => (
        <li
          key={m.id || m.clientMsgId}
          className={`msg ${m.sender === me ? "mine" : ""} ${m.pending ? "pending" : ""} ${m.failed ? "failed" : ""}`}
          data-testid="message"
          data-id={m.id}
          data-seq={m.seq}
        >
          <div className="meta">
            <span className="sender" data-testid="sender">
              {m.sender}
            </span>
            <time dateTime={new Date(m.sentAt).toISOString()} title={fullTime(m.sentAt)}>
              {shortTime(m.sentAt)}
            </time>
            {m.pending && <span className="muted"> · sending…</span>}
          </div>
          {m.text !== undefined && (
            <p className="text" data-testid="text">
              {m.text}
            </p>
          )}
          {m.file && <FileLink file={m.file} session={session} onError={onError} />}
          {m.failed && (
            <p className="error" role="alert">
              Not sent: {m.failed}
            </p>
          )}
        </li>
      ))}
    </ol>
  );
}

function FileLink({ file, session, onError }: { file: FileInfo; session: SessionManager; onError: (t: string) => void }) {
  const [busy, setBusy] = useState(false);
  return (
    <div className="file" data-testid="file">
      <span className="file-icon" aria-hidden="true">FILE</span>{" "}
      <button
        type="button"
        className="link"
        data-testid="file-download"
        disabled={busy}
        onClick={async () => {
          setBusy(true);
          try {
            await downloadFile(file, await session.accessToken());
          } catch (err) {
            onError(`Download failed: ${(err as Error).message}`);
          } finally {
            setBusy(false);
          }
        }}
        aria-label={`Download ${file.name} (${formatBytes(file.size)})`}
      >
        {file.name}
      </button>{" "}
      <span className="muted">({formatBytes(file.size)})</span>
    </div>
  );
}

function Composer({ convKey, label, cmd, session }: { convKey: string; label: string; cmd: ChatCommands; session: SessionManager }) {
  const [text, setText] = useState("");
  const [upload, setUpload] = useState<{ name: string; fraction: number; handle: UploadHandle } | null>(null);
  const fileRef = useRef<HTMLInputElement>(null);
  const uid = useId();
  const throttle = useMemo(() => new TypingThrottle((s) => cmd.typing(convKey, s.typing)), [cmd, convKey]);

  // Leaving the conversation stops the typing indicator.
  useEffect(() => () => throttle.stop(), [throttle]);

  function send() {
    const t = text.trim();
    if (!t) return;
    if (t.length > 4000) {
      cmd.toast("Messages are limited to 4000 characters.");
      return;
    }
    cmd.sendText(convKey, text.replace(/^\s*\n|\n\s*$/g, ""));
    setText("");
    throttle.stop();
  }

  function onKeyDown(e: KeyboardEvent<HTMLTextAreaElement>) {
    if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      send();
    }
  }

  async function onFile(f: File | undefined) {
    if (!f) return;
    try {
      const token = await session.accessToken();
      const handle = uploadFile(f, token, (fraction) => setUpload((u) => (u ? { ...u, fraction } : u)));
      setUpload({ name: f.name, fraction: 0, handle });
      const info = await handle.promise;
      cmd.sendFile(convKey, info);
    } catch (err) {
      cmd.toast(`Upload of ${f.name} failed: ${(err as Error).message}`);
    } finally {
      setUpload(null);
      if (fileRef.current) fileRef.current.value = "";
    }
  }

  return (
    <div className="composer">
      {upload && (
        <div className="upload" data-testid="upload">
          <label htmlFor={`${uid}-prog`}>Uploading {upload.name}</label>
          <progress id={`${uid}-prog`} max={1} value={upload.fraction} data-testid="upload-progress" />
          <span className="muted">{Math.round(upload.fraction * 100)}%</span>
          <button type="button" className="small secondary" onClick={() => upload.handle.abort()}>
            Cancel
          </button>
        </div>
      )}
      <form
        className="row"
        onSubmit={(e) => {
          e.preventDefault();
          send();
        }}
      >
        <label htmlFor={`${uid}-text`} className="visually-hidden">
          {label}
        </label>
        <textarea
          id={`${uid}-text`}
          data-testid="composer"
          rows={2}
          placeholder={`${label} — Enter to send, Shift+Enter for a new line`}
          value={text}
          onChange={(e) => {
            setText(e.target.value);
            if (e.target.value) throttle.keystroke();
            else throttle.stop();
          }}
          onKeyDown={onKeyDown}
          onBlur={() => throttle.stop()}
        />
        <input
          id={`${uid}-file`}
          ref={fileRef}
          type="file"
          className="visually-hidden"
          data-testid="file-input"
          onChange={(e) => void onFile(e.target.files?.[0])}
        />
        <label className="button secondary" htmlFor={`${uid}-file`}>
          Attach file
        </label>
        <button type="submit" className="primary">
          Send
        </button>
      </form>
    </div>
  );
}
