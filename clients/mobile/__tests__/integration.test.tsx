/**
 * End to end against a real parleyd: the app's own components, rendered with
 * @testing-library/react-native, talk to the server over real sockets (the
 * `ws` package as WebSocket, Node's fetch for REST). Two people, alice and
 * bob, each in their own <App/>. The steps run in order and share state.
 *
 *   npx jest __tests__/integration.test.tsx
 *   PARLEYD_BIN=/path/parleyd npx jest ...     to skip the go build
 */
import React from "react";
import { View } from "react-native";
import { act, cleanup, fireEvent, render, screen, waitFor, within } from "@testing-library/react-native/pure";
import WS from "ws";
import App from "../src/ui/App";
import { Api, RestClient, ApiError, wsUrl } from "../src/api/rest";
import { SessionManager } from "../src/auth/session";
import { LiveConnection, type WebSocketFactory, type WebSocketLike } from "../src/live/connection";
import { Parleyd, until } from "./harness";

const T = 20_000; // how long to wait for something to show up
const PW = "correct-horse-battery";
// Short-lived access tokens, so the test also lives through real refreshes.
const ACCESS_TTL_S = 12;

const server = new Parleyd(["--access-ttl", `${ACCESS_TTL_S}s`]);

/** A real fetch that counts the token refreshes it carries. */
let refreshCalls = 0;
let connectedAt = 0;
const countingFetch = (input: string, init?: RequestInit) => {
  if (input.endsWith("/api/auth/refresh")) refreshCalls += 1;
  return fetch(input, init);
};

/**
 * gate lets the test keep one client off the network: while closed, new
 * sockets go to a port nobody listens on (connection refused, close 1006),
 * as a phone in a tunnel would. The sockets are real either way.
 */
class Gate {
  closed = false;
  opened = 0;
  current: WebSocketLike | null = null;
  factory: WebSocketFactory = (url, protocols) => {
    this.opened += 1;
    const ws = new WS(this.closed ? "ws://127.0.0.1:1/ws" : url, protocols) as unknown as WebSocketLike;
    this.current = ws;
    return ws;
  };
}
const aliceGate = new Gate();
const seenProtocols: string[][] = [];
/**
 * bob's sockets send an Origin derived from the URL, as React Native's
 * Android and iOS WebSockets do (ws://h:p -> http://h:p); parleyd's default
 * allow-list has its own localhost origins.
 */
const tracking: WebSocketFactory = (url, protocols) => {
  seenProtocols.push(protocols);
  expect(url).not.toMatch(/token|bearer/i);
  const origin = url.replace(/^ws/, "http").replace(/\/ws$/, "");
  return new WS(url, protocols, { origin }) as unknown as WebSocketLike;
};

const pane = (who: string) => within(screen.getByTestId(`app-${who}`));

async function logIn(who: string, username: string, password: string) {
  const p = pane(who);
  fireEvent.changeText(p.getByLabelText("Server URL"), server.baseURL);
  fireEvent.changeText(p.getByLabelText("Username"), username);
  fireEvent.changeText(p.getByLabelText("Password"), password);
  fireEvent.press(p.getByLabelText("Log in"));
}

function statusOf(who: string): string {
  const t = pane(who).queryByTestId("status-text");
  return t ? String(t.props.children) : "";
}

async function waitStatus(who: string, re: RegExp, timeout = T) {
  await waitFor(() => expect(statusOf(who)).toMatch(re), { timeout });
}

async function send(who: string, text: string) {
  const p = pane(who);
  fireEvent.changeText(p.getByLabelText("Message"), text);
  fireEvent.press(p.getByLabelText("Send"));
}

function messageTexts(who: string): string[] {
  return pane(who)
    .queryAllByTestId("message-text")
    .map((n) => String(n.props.children));
}

async function seeMessage(who: string, text: string, timeout = T) {
  await waitFor(() => expect(messageTexts(who)).toContain(text), { timeout });
}

function tab(who: string, name: string) {
  fireEvent.press(pane(who).getByLabelText(`${name} tab`));
}

function title(who: string): string {
  return String(pane(who).getByTestId("conversation-title").props.children);
}

beforeAll(async () => {
  // Server events update the screens at any time, as on a phone; React's
  // act() bookkeeping is for updates the test itself causes, so it is off
  // here (render, fireEvent and waitFor still wrap their own work in act).
  (globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = false;
  server.build();
  await server.start();
  // Two accounts, registered over REST.
  const rest = new RestClient(server.baseURL);
  await rest.register("alice", PW);
  await rest.register("bob", PW);
}, 300_000);

beforeEach(() => {
  (globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = false;
});

afterAll(async () => {
  cleanup();
  await server.cleanup();
});

describe("Parley mobile against a real parleyd", () => {
  it("shows an error for a wrong password and for a too-short registration", async () => {
    render(
      <View testID="app-alice">
        <App fetchImpl={countingFetch} />
      </View>,
    );
    await logIn("alice", "alice", "not-the-password");
    await waitFor(() => expect(pane("alice").getByTestId("login-error")).toBeTruthy(), { timeout: T });
    expect(String(pane("alice").getByTestId("login-error").props.children)).toMatch(/password|credentials|invalid/i);
    expect(pane("alice").getByTestId("login-screen")).toBeTruthy();

    const p = pane("alice");
    fireEvent.changeText(p.getByLabelText("Username"), "carol");
    fireEvent.changeText(p.getByLabelText("Password"), "short");
    fireEvent.press(p.getByLabelText("Register"));
    await waitFor(() => expect(String(pane("alice").getByTestId("login-error").props.children)).toMatch(/password/i), { timeout: T });

    fireEvent.changeText(p.getByLabelText("Server URL"), "");
    fireEvent.press(p.getByLabelText("Log in"));
    await waitFor(() => expect(String(pane("alice").getByTestId("login-error").props.children)).toMatch(/server URL/i), { timeout: T });
    cleanup();
  });

  it("logs both in and shows who is online", async () => {
    render(
      <View>
        <View testID="app-alice">
          <App fetchImpl={countingFetch} webSocket={aliceGate.factory} backoff={{ initialMs: 200, maxMs: 1_000 }} />
        </View>
        <View testID="app-bob">
          <App fetchImpl={countingFetch} webSocket={tracking} backoff={{ initialMs: 200, maxMs: 1_000 }} />
        </View>
      </View>,
    );
    await logIn("alice", "alice", PW);
    await logIn("bob", "bob", PW);
    await waitStatus("alice", /^Connected · 2 online$/);
    await waitStatus("bob", /^Connected · 2 online$/);
    connectedAt = Date.now();
    // The token went in Sec-WebSocket-Protocol, after parley.v1.
    expect(seenProtocols[0][0]).toBe("parley.v1");
    expect(seenProtocols[0][1]).toMatch(/^bearer\.[\w-]+\.[\w-]+\.[\w-]+$/);
    expect(title("alice")).toBe("# general");
  });

  it("delivers a message in general with sender and time", async () => {
    await send("alice", "hello everyone");
    await seeMessage("bob", "hello everyone");
    const rows = pane("bob").getAllByTestId("message");
    const row = within(rows[rows.length - 1]);
    expect(String(row.getByTestId("message-sender").props.children)).toBe("alice");
    expect(String(row.getByTestId("message-time").props.children)).toMatch(/^\d\d:\d\d$/);
    // Alice's own copy settles (acknowledged, no "sending…").
    await waitFor(() => expect(pane("alice").queryAllByText(/sending…/)).toHaveLength(0), { timeout: T });
  });

  it("shows the typing indicator and clears it when the message arrives", async () => {
    fireEvent.changeText(pane("alice").getByLabelText("Message"), "I am typ");
    await waitFor(() => expect(String(pane("bob").getByTestId("typing").props.children)).toBe("alice is typing…"), { timeout: T });
    fireEvent.press(pane("alice").getByLabelText("Send"));
    await seeMessage("bob", "I am typ");
    await waitFor(() => expect(String(pane("bob").getByTestId("typing").props.children)).toBe(""), { timeout: T });
  });

  it("opens a private conversation from the online list, with an unread count", async () => {
    tab("bob", "Online");
    fireEvent.press(pane("bob").getByLabelText("Message alice"));
    expect(title("bob")).toBe("@ alice");
    await send("bob", "psst, alice");
    // Alice is in general: the direct message counts as unread.
    await waitFor(() => expect(pane("alice").getByLabelText("Conversations tab")).toBeTruthy());
    await waitFor(() => expect(pane("alice").getByText("Conversations (1)")).toBeTruthy(), { timeout: T });
    tab("alice", "Conversations");
    expect(pane("alice").getByLabelText("Open @ bob, 1 unread")).toBeTruthy();
    fireEvent.press(pane("alice").getByLabelText("Open @ bob, 1 unread"));
    expect(title("alice")).toBe("@ bob");
    await seeMessage("alice", "psst, alice");
    expect(pane("alice").getByText("Conversations")).toBeTruthy(); // read now
    await send("alice", "hi bob, only you see this");
    await seeMessage("bob", "hi bob, only you see this");
  });

  it("creates, joins, chats in and leaves a room, with member counts", async () => {
    tab("alice", "Rooms");
    fireEvent.changeText(pane("alice").getByLabelText("New room name"), "lounge");
    fireEvent.press(pane("alice").getByLabelText("Create or join room"));
    expect(title("alice")).toBe("# lounge");
    // The server confirmed her join (RoomJoined) before bob lists the rooms.
    tab("alice", "Rooms");
    await waitFor(() => expect(pane("alice").getByText(/^# lounge · 1 member( · \d+ online)?$/)).toBeTruthy(), { timeout: T });
    fireEvent.press(pane("alice").getByLabelText("Open room lounge"));
    expect(title("alice")).toBe("# lounge");

    tab("bob", "Rooms");
    await waitFor(() => expect(pane("bob").getByText(/^# lounge · 1 member( · \d+ online)?$/)).toBeTruthy(), { timeout: T });
    fireEvent.press(pane("bob").getByLabelText("Join room lounge"));
    expect(title("bob")).toBe("# lounge");
    await send("bob", "hello lounge");
    await seeMessage("alice", "hello lounge");
    await send("alice", "welcome bob");
    await seeMessage("bob", "welcome bob");

    tab("alice", "Rooms");
    await waitFor(() => expect(pane("alice").getByText(/^# lounge · 2 members( · \d+ online)?$/)).toBeTruthy(), { timeout: T });
    tab("bob", "Rooms");
    fireEvent.press(pane("bob").getByLabelText("Leave room lounge"));
    await waitFor(() => expect(pane("bob").getByLabelText("Join lounge")).toBeTruthy(), { timeout: T });
    await waitFor(() => expect(pane("alice").getByText(/^# lounge · 1 member( · \d+ online)?$/)).toBeTruthy(), { timeout: T });
    // Back to general for both.
    tab("alice", "Conversations");
    fireEvent.press(pane("alice").getByLabelText(/^Open # general/));
    tab("bob", "Conversations");
    fireEvent.press(pane("bob").getByLabelText(/^Open # general/));
  });

  it("outlives its access token by refreshing it, without dropping the stream", async () => {
    // Wait until the tokens the streams were opened with have expired.
    await until(() => Date.now() > connectedAt + (ACCESS_TTL_S + 2) * 1000, "the first access tokens to expire", (ACCESS_TTL_S + 10) * 1000);
    expect(refreshCalls).toBeGreaterThanOrEqual(2);
    const opened = aliceGate.opened;
    await send("alice", "still here after a refresh");
    await seeMessage("bob", "still here after a refresh");
    expect(aliceGate.opened).toBe(opened); // no reconnect was needed
    expect(statusOf("alice")).toMatch(/^Connected/);
  });

  it("reconnects after a server restart and resumes without losing messages", async () => {
    aliceGate.closed = true; // alice's phone goes into a tunnel
    await act(async () => {
      await server.restart();
    });
    await waitStatus("alice", /^Reconnecting/);
    // Bob comes back on his own (backoff), and resumes.
    await waitStatus("bob", /^Connected · 1 online$/);
    await waitFor(() => expect(pane("bob").getByTestId("restored")).toBeTruthy(), { timeout: T });

    // Meanwhile: alice writes offline (queued), bob writes to general and to her.
    await send("alice", "written in the tunnel");
    expect(pane("alice").getAllByText(/sending…/).length).toBeGreaterThan(0);
    await send("bob", "missed one");
    await send("bob", "missed two");
    tab("bob", "Online");
    await waitFor(() => expect(pane("bob").queryByLabelText("Message alice")).toBeNull(), { timeout: T }); // she is offline
    tab("bob", "Conversations");
    fireEvent.press(pane("bob").getByLabelText(/^Open @ alice/));
    await send("bob", "missed direct");
    await waitFor(() => expect(pane("bob").queryAllByText(/sending…/)).toHaveLength(0), { timeout: T });
    expect(statusOf("alice")).toMatch(/^Reconnecting/);

    aliceGate.closed = false; // out of the tunnel
    await waitStatus("alice", /^Connected · 2 online$/);
    await waitFor(() => expect(String(pane("alice").getByTestId("restored").props.children)).toMatch(/^Reconnected/), { timeout: T });
    await seeMessage("alice", "missed one");
    await seeMessage("alice", "missed two");
    // Each exactly once, in order, after what she had.
    const texts = messageTexts("alice");
    expect(texts.filter((t) => t === "missed one")).toHaveLength(1);
    expect(texts.indexOf("missed one")).toBeLessThan(texts.indexOf("missed two"));
    expect(texts.indexOf("hello everyone")).toBeLessThan(texts.indexOf("missed one"));
    // The direct message came back too, as unread.
    await waitFor(() => expect(pane("alice").getByText("Conversations (1)")).toBeTruthy(), { timeout: T });
    // What alice wrote offline went out once the stream was back.
    tab("bob", "Conversations");
    fireEvent.press(pane("bob").getByLabelText(/^Open # general/));
    await seeMessage("bob", "written in the tunnel");
    expect(messageTexts("bob").filter((t) => t === "written in the tunnel")).toHaveLength(1);
    await waitFor(() => expect(pane("alice").queryAllByText(/sending…/)).toHaveLength(0), { timeout: T });
  });

  it("shows a file message with a working download link", async () => {
    // The app has no file picker (see README); bob posts a file with the
    // REST upload and a second live session of his, both this app's code.
    const rest = new RestClient(server.baseURL);
    const session = new SessionManager(rest);
    await session.login("bob", PW);
    const api = new Api(rest, (force) => session.accessToken(force));
    const content = new TextEncoder().encode("meeting notes");
    const file = await api.upload(content, "notes.txt", "text/plain");
    expect(file.size).toBe(content.byteLength);
    const acked: string[] = [];
    const live = new LiveConnection({
      url: wsUrl(rest.baseUrl),
      webSocket: (u, p) => new WS(u, p) as unknown as WebSocketLike,
      token: (force) => session.accessToken(force),
      onEvent: (ev) => {
        if (ev.event.case === "ack") acked.push(ev.requestId);
      },
      onStatus: () => {},
      cursors: () => [],
    });
    try {
      live.start();
      const id = live.send(
        { event: { case: "sendFile", value: { conversation: { kind: { case: "room", value: "general" } }, fileId: file.id, clientMsgId: "file-1" } } },
        { durable: true },
      );
      await until(() => acked.includes(id), "the file message's ack", T);
    } finally {
      live.stop();
      session.dispose();
    }
    const link = await waitFor(() => pane("alice").getByLabelText("Download notes.txt"), { timeout: T });
    fireEvent.press(link);
    await waitFor(() => expect(String(pane("alice").getByTestId("download-status").props.children)).toBe("downloaded 13 B"), { timeout: T });
  });

  it("logs out and refuses the old session", async () => {
    fireEvent.press(pane("bob").getByLabelText("Log out"));
    await waitFor(() => expect(pane("bob").getByTestId("login-screen")).toBeTruthy(), { timeout: T });
    await waitStatus("alice", /^Connected · 1 online$/);
    // A refresh token that was logged out no longer works.
    const rest = new RestClient(server.baseURL);
    const s = await rest.login("bob", PW);
    await rest.logout(s.tokens!.refreshToken);
    await expect(rest.refresh(s.tokens!.refreshToken)).rejects.toBeInstanceOf(ApiError);
  });

  it("after an app restart lists every past conversation, and writes to an offline peer", async () => {
    // A fresh app holds nothing: what it shows comes from the server's
    // conversation list (bob is offline, so no live event names him).
    cleanup();
    await new Promise((r) => setTimeout(r, 50)); // let the unmount finish before the next render
    render(
      <View testID="app-alice">
        <App fetchImpl={countingFetch} />
      </View>,
    );
    await logIn("alice", "alice", PW);
    await waitStatus("alice", /^Connected · 1 online$/);
    tab("alice", "Conversations");
    await waitFor(() => expect(pane("alice").getByLabelText(/^Open @ bob/)).toBeTruthy(), { timeout: T });
    expect(String(pane("alice").getByTestId("preview-dm:bob").props.children)).toBe("bob: missed direct");
    expect(pane("alice").getByLabelText(/^Open # lounge/)).toBeTruthy(); // bob left it; alice is still in
    // Rooms: stored members and who of them is online.
    tab("alice", "Rooms");
    await waitFor(() => expect(String(pane("alice").getByTestId("room-counts-lounge").props.children.join(""))).toBe("# lounge · 1 member · 1 online"), { timeout: T });
    await waitFor(() => expect(String(pane("alice").getByTestId("room-counts-general").props.children.join(""))).toMatch(/^# general · \d+ members · 1 online$/), { timeout: T });

    tab("alice", "Conversations");
    fireEvent.press(pane("alice").getByLabelText(/^Open @ bob/));
    expect(title("alice")).toBe("@ bob");
    await seeMessage("alice", "psst, alice"); // the history, not only the last message
    await send("alice", "for when you are back");
    await waitFor(() => expect(pane("alice").queryAllByText(/sending…/)).toHaveLength(0), { timeout: T });
    // Stored for bob.
    const rest = new RestClient(server.baseURL);
    const session = new SessionManager(rest);
    await session.login("bob", PW);
    try {
      const api = new Api(rest, (force) => session.accessToken(force));
      const res = await api.history("dm:alice");
      expect(res.messages.map((m) => (m.body.case === "text" ? m.body.value : ""))).toContain("for when you are back");
    } finally {
      session.dispose();
    }
  });
});
