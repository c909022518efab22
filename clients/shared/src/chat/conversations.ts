// The caller's conversations as the server stores them (Chat.ListConversations,
// REST GET /api/conversations): every room and direct conversation the user
// is in, with its last message. The live stream only tells a client about
// conversations that move while it is connected, so after a reload this list
// is what brings back a direct conversation with someone now offline.
//
// Both apps use it: the web app fetches pages over gRPC-Web, the React Native
// app over REST; each passes its own page fetcher. Nothing here keeps state
// between calls, so it is safe to call from any number of places at once.

import type { ConversationSummary, ListConversationsResponse } from "../gen/chat/v1/chat_pb";
import { dmKey, roomKey, type ChatMessage, type ConvKey } from "./model";

/** CONVERSATIONS_PAGE_SIZE is how many conversations one page asks for. */
export const CONVERSATIONS_PAGE_SIZE = 100;

/**
 * MAX_CONVERSATION_PAGES bounds one load: a server that keeps returning a
 * page token (a bug, or a user in tens of thousands of conversations) cannot
 * keep the client fetching forever. 50 pages of 100 are 5,000 conversations.
 */
export const MAX_CONVERSATION_PAGES = 50;

/** PageFetcher fetches one page; pageToken is "" for the first. */
export type PageFetcher = (pageSize: number, pageToken: string) => Promise<ListConversationsResponse>;

/**
 * loadConversations fetches every page, following next_page_token, and
 * returns the summaries in the server's order (most recently active first).
 * It stops after maxPages pages, or when a token repeats.
 */
export async function loadConversations(
  fetchPage: PageFetcher,
  { pageSize = CONVERSATIONS_PAGE_SIZE, maxPages = MAX_CONVERSATION_PAGES } = {},
): Promise<ConversationSummary[]> {
  const out: ConversationSummary[] = [];
  const seen = new Set<string>();
  let token = "";
  for (let page = 0; page < maxPages; page++) {
    const res = await fetchPage(pageSize, token);
    out.push(...res.conversations);
    token = res.nextPageToken;
    if (!token || seen.has(token)) break;
    seen.add(token);
  }
  return out;
}

/**
 * summaryKey is the local key of a summary. Unlike in message events, a
 * summary's direct conversation names the caller's peer.
 */
export function summaryKey(s: ConversationSummary): ConvKey | null {
  switch (s.conversation?.kind.case) {
    case "room":
      return roomKey(s.conversation.kind.value);
    case "user":
      return dmKey(s.conversation.kind.value);
    default:
      return null;
  }
}

/** preview is one line for a conversation's last message in a list. */
export function preview(m: ChatMessage | undefined, me: string): string {
  if (!m) return "";
  const body = m.text ?? (m.file ? `📎 ${m.file.name}` : "");
  const who = m.sender === me ? "You" : m.sender;
  return `${who}: ${body.replace(/\s+/g, " ").trim()}`;
}
