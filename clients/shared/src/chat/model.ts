// The app's view of conversations, independent of the wire types.

import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ConversationSchema, Conversation, Message } from "../gen/chat/v1/chat_pb";

/** ConvKey names a conversation locally: "room:NAME" or "dm:PEER". */
export type ConvKey = string;

/** GENERAL is the global room every user is in. */
export const GENERAL = "general";

export const roomKey = (room: string): ConvKey => `room:${room}`;
export const dmKey = (peer: string): ConvKey => `dm:${peer}`;

/** parseKey splits a ConvKey into its kind and name. */
export function parseKey(key: ConvKey): { kind: "room" | "dm"; name: string } {
  const i = key.indexOf(":");
  const kind = key.slice(0, i) === "dm" ? "dm" : "room";
  return { kind, name: key.slice(i + 1) };
}

/** conversationInit is the wire Conversation for a key (requests name the peer). */
export function conversationInit(key: ConvKey): MessageInitShape<typeof ConversationSchema> {
  const { kind, name } = parseKey(key);
  return kind === "room" ? { kind: { case: "room", value: name } } : { kind: { case: "user", value: name } };
}

/**
 * keyOf maps a Conversation the server sent to the reader's key. In server
 * events a direct conversation's `user` is the recipient, so the reader's
 * peer is whichever of actor and recipient is not the reader.
 */
export function keyOf(conv: Conversation | undefined, me: string, actor: string): ConvKey | null {
  switch (conv?.kind.case) {
    case "room":
      return roomKey(conv.kind.value);
    case "user": {
      const recipient = conv.kind.value;
      return dmKey(actor === me ? recipient : actor);
    }
    default:
      return null;
  }
}

/**
 * peerKeyOf maps a Conversation whose `user` is the reader's peer (requests,
 * RecentMessages) to its key.
 */
export function peerKeyOf(conv: Conversation | undefined): ConvKey | null {
  switch (conv?.kind.case) {
    case "room":
      return roomKey(conv.kind.value);
    case "user":
      return dmKey(conv.kind.value);
    default:
      return null;
  }
}

/** FileInfo describes an uploaded file attached to a message. */
export interface FileInfo {
  id: string;
  name: string;
  size: number;
  contentType: string;
}

/** ChatMessage is one message as the UI shows it. */
export interface ChatMessage {
  /** id is the server's message id; "" while pending. */
  id: string;
  /** seq orders the message in its conversation; 0 while pending. */
  seq: number;
  sender: string;
  /** sentAt is ms since the epoch. */
  sentAt: number;
  clientMsgId: string;
  text?: string;
  file?: FileInfo;
  /** pending is true until the server acknowledged the message. */
  pending?: boolean;
  /** requestId is the ClientEvent request id of a pending send. */
  requestId?: string;
  /** failed holds the server's error for a send that was refused. */
  failed?: string;
}

/** fromWire converts a wire Message. */
export function fromWire(m: Message): ChatMessage {
  const out: ChatMessage = {
    id: m.id,
    seq: Number(m.seq),
    sender: m.sender,
    sentAt: m.sentAt ? timestampMs(m.sentAt) : Date.now(),
    clientMsgId: m.clientMsgId,
  };
  if (m.body.case === "text") out.text = m.body.value;
  if (m.body.case === "file") {
    const f = m.body.value;
    out.file = { id: f.id, name: f.name, size: Number(f.size), contentType: f.contentType };
  }
  return out;
}

/** formatBytes renders a size for people: "912 B", "3.4 KB", "1.2 MB". */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(1)} GB`;
}
