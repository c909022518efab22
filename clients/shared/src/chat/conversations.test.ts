import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ListConversationsResponseSchema, Role, ServerEventSchema } from "../gen/chat/v1/chat_pb";
import type { ListConversationsResponse } from "../gen/chat/v1/chat_pb";
import { loadConversations, preview, summaryKey } from "./conversations";
import { dmKey, roomKey } from "./model";
import { dmKeys, initialState, lastMessage, reduce } from "./store";

type Page = MessageInitShape<typeof ListConversationsResponseSchema>;
const page = (p: Page) => create(ListConversationsResponseSchema, p);

function dmSummary(peer: string, sender: string, recipient: string, seq: number, text: string, atMs: number) {
  return {
    conversation: { kind: { case: "user" as const, value: peer } },
    lastSeq: BigInt(seq),
    lastMessage: {
      id: `m-${peer}-${seq}`,
      seq: BigInt(seq),
      sender,
      conversation: { kind: { case: "user" as const, value: recipient } },
      sentAt: timestampFromMs(atMs),
      body: { case: "text" as const, value: text },
    },
  };
}

describe("loadConversations", () => {
  it("follows page tokens and keeps the server's order", async () => {
    const pages: Record<string, Page> = {
      "": { conversations: [dmSummary("bob", "bob", "me", 3, "hi", 3000)], nextPageToken: "p2" },
      p2: { conversations: [{ conversation: { kind: { case: "room", value: "general" } } }], nextPageToken: "" },
    };
    const asked: [number, string][] = [];
    const got = await loadConversations(async (size, token) => {
      asked.push([size, token]);
      return page(pages[token]);
    }, { pageSize: 1 });
    expect(asked).toEqual([[1, ""], [1, "p2"]]);
    expect(got.map(summaryKey)).toEqual([dmKey("bob"), roomKey("general")]);
  });

  it("stops at maxPages and on a repeated token", async () => {
    let calls = 0;
    const forever = async (): Promise<ListConversationsResponse> => {
      calls++;
      return page({ conversations: [], nextPageToken: `t${calls}` });
    };
    await loadConversations(forever, { maxPages: 3 });
    expect(calls).toBe(3);
    calls = 0;
    await loadConversations(async () => {
      calls++;
      return page({ nextPageToken: "same" });
    });
    expect(calls).toBe(2);
  });

  it("passes a failed page on", async () => {
    await expect(loadConversations(async () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
  });
});

describe("the conversations action", () => {
  it("lists every stored DM and room with its last message after a reload", () => {
    // A fresh page: nobody online, no live events yet.
    let s = initialState("me", Role.USER);
    const res = page({
      conversations: [
        // A summary names the peer; the message's conversation names the recipient.
        dmSummary("bob", "me", "bob", 7, "see you", 7000),
        dmSummary("ann", "ann", "me", 2, "hello\nthere", 2000),
        {
          conversation: { kind: { case: "room", value: "lounge" } },
          lastSeq: 4n,
          lastMessage: {
            id: "r4",
            seq: 4n,
            sender: "cid",
            conversation: { kind: { case: "room", value: "lounge" } },
            sentAt: timestampFromMs(5000),
            body: { case: "file", value: { id: "f".repeat(64), name: "plan.pdf", size: 10n } },
          },
        },
        { conversation: { kind: { case: "room", value: "quiet" } } },
      ],
    });
    s = reduce(s, { type: "conversations", summaries: res.conversations });

    expect(dmKeys(s)).toEqual([dmKey("bob"), dmKey("ann")]); // most recent first
    expect(preview(lastMessage(s.convs[dmKey("bob")]), "me")).toBe("You: see you");
    expect(preview(lastMessage(s.convs[dmKey("ann")]), "me")).toBe("ann: hello there");
    expect(preview(lastMessage(s.convs[roomKey("lounge")]), "me")).toBe("cid: 📎 plan.pdf");
    expect(s.rooms.lounge.joined).toBe(true);
    expect(s.rooms.quiet.joined).toBe(true);
    expect(s.convs[roomKey("quiet")].messages).toEqual([]);
    // Only the last message is known: opening still loads the history, and
    // the resume cursor is the last message.
    expect(s.convs[dmKey("bob")].historyLoaded).toBe(false);
    expect(s.convs[dmKey("bob")].lastSeq).toBe(7);
    expect(s.convs[dmKey("ann")].unread).toBe(0);

    // History then brings the rest without doubling the last message.
    s = reduce(s, {
      type: "history",
      key: dmKey("bob"),
      messages: [
        { id: "m-bob-6", seq: 6, sender: "bob", sentAt: 6000, clientMsgId: "", text: "bye?" },
        { id: "m-bob-7", seq: 7, sender: "me", sentAt: 7000, clientMsgId: "", text: "see you" },
      ],
    });
    expect(s.convs[dmKey("bob")].messages.map((m) => m.text)).toEqual(["bye?", "see you"]);
  });

  it("merges with what the live stream already brought", () => {
    let s = initialState("me", Role.USER);
    s = reduce(s, {
      type: "server",
      now: 1,
      ev: create(ServerEventSchema, {
        event: {
          case: "message",
          value: {
            id: "m-bob-7",
            seq: 7n,
            sender: "me",
            conversation: { kind: { case: "user", value: "bob" } },
            sentAt: timestampFromMs(7000),
            body: { case: "text", value: "see you" },
          },
        },
      }),
    });
    s = reduce(s, { type: "conversations", summaries: page({ conversations: [dmSummary("bob", "me", "bob", 7, "see you", 7000)] }).conversations });
    expect(s.convs[dmKey("bob")].messages).toHaveLength(1);
  });

  it("skips a summary without a conversation", () => {
    const s0 = initialState("me", Role.USER);
    const s = reduce(s0, { type: "conversations", summaries: page({ conversations: [{ lastSeq: 1n }] }).conversations });
    expect(Object.keys(s.convs)).toEqual(Object.keys(s0.convs));
  });
});

describe("room counts", () => {
  it("keeps the online count of the room list beside the member count", () => {
    let s = initialState("me", Role.USER);
    s = reduce(s, {
      type: "server",
      now: 1,
      ev: create(ServerEventSchema, {
        event: {
          case: "roomsList",
          value: { rooms: [{ name: "general", memberCount: 5, onlineCount: 2, joined: true }, { name: "empty", memberCount: 3, onlineCount: 0 }] },
        },
      }),
    });
    expect(s.rooms.general).toEqual({ name: "general", memberCount: 5, onlineCount: 2, joined: true });
    expect(s.rooms.empty).toEqual({ name: "empty", memberCount: 3, onlineCount: 0, joined: false });
    // A live member change moves the member count and keeps the last online count.
    s = reduce(s, { type: "server", now: 2, ev: create(ServerEventSchema, { event: { case: "memberJoined", value: { room: "general", username: "x", memberCount: 6 } } }) });
    expect(s.rooms.general).toMatchObject({ memberCount: 6, onlineCount: 2 });
  });
});
