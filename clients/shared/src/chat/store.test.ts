import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ConversationSchema, Role, ServerEventSchema } from "../gen/chat/v1/chat_pb";
import { dmKey, keyOf, roomKey, type ChatMessage } from "./model";
import { cursorsOf, initialState, mergeMessages, reduce, typingNames, type ChatState } from "./store";

type Ev = MessageInitShape<typeof ServerEventSchema>;
const ev = (e: Ev) => ({ type: "server" as const, ev: create(ServerEventSchema, e), now: 1_000 });

function roomMsg(id: string, seq: number, sender: string, text: string, room = "general", clientMsgId = ""): Ev {
  return {
    event: {
      case: "message",
      value: {
        id,
        seq: BigInt(seq),
        sender,
        clientMsgId,
        conversation: { kind: { case: "room", value: room } },
        sentAt: timestampFromMs(seq * 1000),
        body: { case: "text", value: text },
      },
    },
  };
}

function dm(id: string, seq: number, sender: string, recipient: string, text: string): Ev {
  return {
    event: {
      case: "message",
      value: { id, seq: BigInt(seq), sender, conversation: { kind: { case: "user", value: recipient } }, body: { case: "text", value: text } },
    },
  };
}

const texts = (s: ChatState, key = roomKey("general")) => s.convs[key].messages.map((m) => m.text);

describe("keyOf", () => {
  it("maps direct conversations to the reader's peer", () => {
    const conv = create(ConversationSchema, { kind: { case: "user", value: "bob" } });
    // ann sent to bob: for ann the peer is bob, for bob it is ann.
    expect(keyOf(conv, "ann", "ann")).toBe(dmKey("bob"));
    expect(keyOf(conv, "bob", "ann")).toBe(dmKey("ann"));
    expect(keyOf(create(ConversationSchema, { kind: { case: "room", value: "go" } }), "ann", "bob")).toBe(roomKey("go"));
    expect(keyOf(undefined, "ann", "bob")).toBeNull();
  });
});

describe("reduce", () => {
  it("dedupes messages by id, keeps seq order and tracks the cursor", () => {
    let s = initialState("ann", Role.USER);
    s = reduce(s, ev(roomMsg("m2", 2, "bob", "two")));
    s = reduce(s, ev(roomMsg("m1", 1, "bob", "one")));
    s = reduce(s, ev(roomMsg("m2", 2, "bob", "two")));
    s = reduce(s, ev({ event: { case: "recentMessages", value: { conversation: { kind: { case: "room", value: "general" } }, messages: [
      create(ServerEventSchema, roomMsg("m1", 1, "bob", "one")).event.value as never,
      create(ServerEventSchema, roomMsg("m3", 3, "cid", "three")).event.value as never,
    ] } } }));
    expect(texts(s)).toEqual(["one", "two", "three"]);
    expect(s.convs[roomKey("general")].lastSeq).toBe(3);
    expect(cursorsOf(s)).toEqual([{ key: roomKey("general"), lastSeq: 3 }]);
  });

  it("settles a pending send by ack and by the echoed message, never twice", () => {
    let s = initialState("ann", Role.USER);
    const pending: ChatMessage = { id: "", seq: 0, sender: "ann", sentAt: 5, clientMsgId: "c1", text: "hi", pending: true, requestId: "r1" };
    s = reduce(s, { type: "pending", key: roomKey("general"), msg: pending });
    s = reduce(s, ev({ requestId: "r1", event: { case: "ack", value: { messageId: "m9", seq: 9n, conversation: { kind: { case: "room", value: "general" } } } } }));
    expect(s.convs[roomKey("general")].messages).toMatchObject([{ id: "m9", seq: 9, pending: false }]);
    s = reduce(s, ev(roomMsg("m9", 9, "ann", "hi", "general", "c1")));
    expect(texts(s)).toEqual(["hi"]);

    // The echo first, then the ack (and a retried send acked as duplicate).
    const p2: ChatMessage = { ...pending, clientMsgId: "c2", text: "again", requestId: "r2" };
    s = reduce(s, { type: "pending", key: roomKey("general"), msg: p2 });
    s = reduce(s, ev(roomMsg("m10", 10, "ann", "again", "general", "c2")));
    s = reduce(s, ev({ requestId: "r2", event: { case: "ack", value: { messageId: "m10", seq: 10n, duplicate: true } } }));
    expect(texts(s)).toEqual(["hi", "again"]);
    expect(s.convs[roomKey("general")].messages.every((m) => !m.pending)).toBe(true);
  });

  it("marks a refused send as failed", () => {
    let s = initialState("ann", Role.USER);
    s = reduce(s, { type: "pending", key: roomKey("general"), msg: { id: "", seq: 0, sender: "ann", sentAt: 1, clientMsgId: "c", text: "x", pending: true, requestId: "r" } });
    s = reduce(s, ev({ requestId: "r", event: { case: "error", value: { code: 4, message: "slow down" } } }));
    expect(s.convs[roomKey("general")].messages[0]).toMatchObject({ pending: false, failed: "slow down" });
  });

  it("counts unread outside the open conversation and clears on open", () => {
    let s = initialState("ann", Role.USER);
    s = reduce(s, ev(dm("d1", 1, "bob", "ann", "psst")));
    s = reduce(s, ev(dm("d2", 2, "bob", "ann", "psst2")));
    s = reduce(s, ev(dm("d2", 2, "bob", "ann", "psst2")));
    s = reduce(s, ev(dm("d3", 3, "ann", "bob", "mine")));
    s = reduce(s, ev(roomMsg("g1", 1, "bob", "in general")));
    expect(s.convs[dmKey("bob")].unread).toBe(2);
    expect(s.convs[roomKey("general")].unread).toBe(0);
    s = reduce(s, { type: "open", key: dmKey("bob") });
    expect(s.convs[dmKey("bob")].unread).toBe(0);
    expect(texts(s, dmKey("bob"))).toEqual(["psst", "psst2", "mine"]);
  });

  it("shows and clears typing, expiring stale starts", () => {
    let s = initialState("ann", Role.USER);
    const typing = (u: string, on: boolean): Ev => ({ event: { case: "typing", value: { username: u, typing: on, conversation: { kind: { case: "room", value: "general" } } } } });
    s = reduce(s, ev(typing("bob", true)));
    s = reduce(s, ev(typing("cid", true)));
    s = reduce(s, ev(typing("ann", true)));
    expect(typingNames(s.convs[roomKey("general")], 1_001)).toEqual(["bob", "cid"]);
    s = reduce(s, ev(typing("bob", false)));
    expect(typingNames(s.convs[roomKey("general")], 1_001)).toEqual(["cid"]);
    s = reduce(s, { type: "tick", now: 1_000_000 });
    expect(typingNames(s.convs[roomKey("general")], 1_000_000)).toEqual([]);
    // A message from a typer clears their indicator.
    s = reduce(s, ev(typing("bob", true)));
    s = reduce(s, ev(roomMsg("g5", 5, "bob", "done")));
    expect(typingNames(s.convs[roomKey("general")], 1_001)).toEqual([]);
  });

  it("lists the snapshot's first page, pages on, and refetches when names are omitted", () => {
    let s = initialState("zed", Role.USER);
    s = reduce(s, ev({ event: { case: "onlineUsers", value: {
      users: [{ username: "ann", role: Role.USER }, { username: "bob", role: Role.ADMIN }],
      onlineCount: 5,
      nextPageToken: "bob",
    } } }));
    // This session's user is listed even when beyond the first page.
    expect(Object.keys(s.online).sort()).toEqual(["ann", "bob", "zed"]);
    expect(s.onlineCount).toBe(5);
    expect(s.onlineNext).toBe("bob");
    s = reduce(s, { type: "onlinePage", users: [{ username: "cy", role: Role.USER }, { username: "di", role: Role.USER }], next: "", count: 5, reset: false });
    expect(Object.keys(s.online).sort()).toEqual(["ann", "bob", "cy", "di", "zed"]);
    expect(s.onlineNext).toBe("");

    // Count only: the count moves, the names are kept but marked stale.
    s = reduce(s, ev({ event: { case: "presenceChanged", value: { onlineCount: 1500, namesOmitted: true } } }));
    expect(s.onlineCount).toBe(1500);
    expect(s.onlineStale).toBe(true);
    expect(Object.keys(s.online)).toHaveLength(5);
    // The refetch replaces the list (keeping this session's user).
    s = reduce(s, { type: "onlinePage", users: [{ username: "aa", role: Role.USER }], next: "aa", count: 1499, reset: true });
    expect(Object.keys(s.online).sort()).toEqual(["aa", "zed"]);
    expect(s.onlineCount).toBe(1499);
    expect(s.onlineNext).toBe("aa");
    expect(s.onlineStale).toBe(false);
  });

  it("tracks presence, rooms and member counts", () => {
    let s = initialState("ann", Role.USER);
    s = reduce(s, ev({ event: { case: "onlineUsers", value: { users: [{ username: "ann", role: Role.USER }] } } }));
    s = reduce(s, ev({ event: { case: "userOnline", value: { user: { username: "bob", role: Role.ADMIN }, onlineCount: 2 } } }));
    expect(s.onlineCount).toBe(2);
    expect(Object.keys(s.online).sort()).toEqual(["ann", "bob"]);
    s = reduce(s, ev({ event: { case: "userOffline", value: { user: { username: "bob" }, onlineCount: 1 } } }));
    expect(s.onlineCount).toBe(1);
    s = reduce(s, ev({ event: { case: "presenceChanged", value: { online: [{ username: "cy", role: Role.USER }, { username: "di", role: Role.USER }], offline: [{ username: "ann" }], onlineCount: 2 } } }));
    expect(Object.keys(s.online).sort()).toEqual(["cy", "di"]);
    expect(s.onlineCount).toBe(2);
    s = reduce(s, ev({ event: { case: "onlineUsers", value: { users: [{ username: "ann", role: Role.USER }] } } }));
    s = reduce(s, ev({ event: { case: "roomsList", value: { rooms: [{ name: "general", memberCount: 2, joined: true }, { name: "go", memberCount: 1 }] } } }));
    expect(s.rooms.go).toEqual({ name: "go", memberCount: 1, onlineCount: 0, joined: false });
    s = reduce(s, ev({ event: { case: "roomJoined", value: { room: "go", members: ["bob", "ann"], memberCount: 2 } } }));
    expect(s.rooms.go.joined).toBe(true);
    s = reduce(s, { type: "open", key: roomKey("go") });
    s = reduce(s, ev({ event: { case: "memberJoined", value: { room: "go", username: "cid", memberCount: 3 } } }));
    expect(s.rooms.go.memberCount).toBe(3);
    s = reduce(s, ev({ event: { case: "roomMembersChanged", value: { room: "go", joined: ["dee", "eve"], left: ["cid"], memberCount: 4 } } }));
    expect(s.rooms.go.memberCount).toBe(4);
    s = reduce(s, ev({ event: { case: "roomMembersChanged", value: { room: "go", memberCount: 1500, namesOmitted: true } } }));
    expect(s.rooms.go).toEqual({ name: "go", memberCount: 1500, onlineCount: 0, joined: true });
    s = reduce(s, ev({ event: { case: "roomLeft", value: { room: "go" } } }));
    expect(s.rooms.go.joined).toBe(false);
    expect(s.active).toBe(roomKey("general"));
    expect(s.convs[roomKey("go")]).toBeUndefined();
  });

  it("marks reconnects as restored", () => {
    let s = initialState("ann", Role.USER);
    s = reduce(s, ev({ event: { case: "welcome", value: { sessionId: "s1", user: { username: "ann", role: Role.MODERATOR } } } }));
    expect(s.conn).toMatchObject({ phase: "connected", reconnects: 0, restoredAt: undefined });
    expect(s.role).toBe(Role.MODERATOR);
    s = reduce(s, { type: "conn", conn: { phase: "reconnecting", attempt: 1 } });
    s = reduce(s, ev({ event: { case: "welcome", value: { sessionId: "s2" } } }));
    s = reduce(s, ev({ event: { case: "stateRestored", value: { rooms: ["go"], messagesReplayed: 2, complete: true } } }));
    expect(s.conn).toMatchObject({ phase: "connected", reconnects: 1, restoredCount: 2, restoredComplete: true });
    expect(s.rooms.go.joined).toBe(true);
  });

  it("files RecentMessages of a direct conversation under the named peer", () => {
    let s = initialState("ann", Role.USER);
    const recent = (msgs: Ev[]): Ev => ({
      event: {
        case: "recentMessages",
        value: { conversation: { kind: { case: "user", value: "bob" } }, messages: msgs.map((m) => create(ServerEventSchema, m).event.value as never) },
      },
    });
    // Only Ann's own messages: still Bob's conversation.
    s = reduce(s, ev(recent([dm("d1", 1, "ann", "bob", "mine")])));
    expect(texts(s, dmKey("bob"))).toEqual(["mine"]);
    expect(s.convs[dmKey("bob")].unread).toBe(0);
    // After a reconnect, a replay counts as unread.
    s = reduce(s, ev({ event: { case: "welcome", value: {} } }));
    s = reduce(s, ev({ event: { case: "welcome", value: {} } }));
    s = reduce(s, ev(recent([dm("d1", 1, "ann", "bob", "mine"), dm("d2", 2, "bob", "ann", "missed")])));
    expect(texts(s, dmKey("bob"))).toEqual(["mine", "missed"]);
    expect(s.convs[dmKey("bob")].unread).toBe(1);
  });

  it("keeps admin broadcasts", () => {
    let s = initialState("ann", Role.USER);
    s = reduce(s, ev({ event: { case: "adminBroadcast", value: { from: "root", text: "maintenance at 5", sentAt: timestampFromMs(7) } } }));
    expect(s.broadcasts).toMatchObject([{ from: "root", text: "maintenance at 5", room: "", sentAt: 7 }]);
  });
});

describe("mergeMessages", () => {
  it("caps the list and reports only new messages", () => {
    const mk = (i: number): ChatMessage => ({ id: `m${i}`, seq: i, sender: "x", sentAt: i, clientMsgId: "" });
    const first = mergeMessages([], Array.from({ length: 600 }, (_, i) => mk(i + 1)));
    expect(first.messages.length).toBe(500);
    expect(first.messages[0].seq).toBe(101);
    const again = mergeMessages(first.messages, [mk(600), mk(601)]);
    expect(again.added.map((m) => m.id)).toEqual(["m601"]);
  });
});
