// /ws in a real browser: Chromium's own WebSocket against parleyd's frame
// layer (bridge/wsconn.go), the peer that /ws has in the wild besides React
// Native. The web app itself speaks gRPC-Web, so this drives /ws from the
// page's script: the subprotocol handshake with the token, JSON frames both
// ways, server pings answered by the browser across several intervals, the
// 1009 close for an oversized frame, 4401 for a bad token, and a clean
// close started by the browser.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { ParleyServer, launchBrowser, removeDir, tempDir } from "./harness.mjs";

describe("/ws in Chromium", { timeout: 90_000 }, () => {
  let tmp, server, browser, page;
  const errors = [];

  before(async () => {
    tmp = await tempDir();
    server = await ParleyServer.launch(tmp, { logName: "parleyd-ws", extraArgs: ["--ping-interval", "1s"] });
    browser = await launchBrowser();
    page = await (await browser.newContext()).newPage();
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(server.baseURL + "/"); // the allowed origin
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    if (tmp) await removeDir(tmp);
  });

  async function register(username) {
    const res = await fetch(server.baseURL + "/api/auth/register", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username, password: username + "-password" }),
    });
    assert.equal(res.status, 200, await res.clone().text());
    return (await res.json()).tokens.accessToken;
  }

  it("chats over JSON frames, answers pings, and closes cleanly", async () => {
    const alice = await register("wsalice");
    const bob = await register("wsbob");
    const got = await page.evaluate(
      async ({ alice, bob }) => {
        const url = location.origin.replace(/^http/, "ws") + "/ws";
        // Opens a socket, sends the hello, and resolves with it once its
        // Welcome came; every event is kept in events.
        const open = (token) =>
          new Promise((resolve, reject) => {
            const ws = new WebSocket(url, ["parley.v1", "bearer." + token]);
            const s = { ws, events: [], closed: null };
            ws.onopen = () => ws.send("{}");
            ws.onmessage = (m) => {
              const ev = JSON.parse(m.data);
              s.events.push(ev);
              if (ev.welcome) resolve(s);
            };
            ws.onclose = (e) => {
              s.closed = { code: e.code, reason: e.reason, clean: e.wasClean };
              reject(new Error(`closed ${e.code} ${e.reason}`));
            };
          });
        const until = async (what, ok, ms = 10_000) => {
          const end = Date.now() + ms;
          while (!ok()) {
            if (Date.now() > end) throw new Error("timed out waiting for " + what);
            await new Promise((r) => setTimeout(r, 20));
          }
        };
        const a = await open(alice);
        const b = await open(bob);
        const protocol = a.ws.protocol;

        a.ws.send(JSON.stringify({ requestId: "1", sendMessage: { room: "general", text: "hello from Chromium", clientMsgId: "c1" } }));
        await until("bob to get the message", () => b.events.some((e) => e.message?.text === "hello from Chromium"));
        await until("alice's ack", () => a.events.some((e) => e.requestId === "1" && e.ack));

        // Held for three ping intervals: each ping must be answered (by the
        // browser) before the next, or the server would end the socket.
        await new Promise((r) => setTimeout(r, 3500));
        const openAfterPings = a.ws.readyState === WebSocket.OPEN && b.ws.readyState === WebSocket.OPEN;
        a.ws.send(JSON.stringify({ requestId: "2", sendMessage: { room: "general", text: "still here", clientMsgId: "c2" } }));
        await until("bob to get the second message", () => b.events.some((e) => e.message?.text === "still here"));

        // A frame that does not decode is answered in band; the socket lives.
        a.ws.send('{"requestId":"3","noSuchEvent":{}}');
        await until("the in-band error", () => a.events.some((e) => e.requestId === "3" && e.error));
        const inBand = a.events.find((e) => e.requestId === "3").error;

        // Over the 128 KiB frame limit: closed with 1009.
        const big = await new Promise((resolve) => {
          b.ws.onclose = (e) => resolve({ code: e.code, reason: e.reason });
          b.ws.send("x".repeat(200 * 1024));
        });

        // The browser closes: the server echoes its code.
        const clean = await new Promise((resolve) => {
          a.ws.onclose = (e) => resolve({ code: e.code, clean: e.wasClean });
          a.ws.close(1000, "bye");
        });

        const bad = await new Promise((resolve) => {
          const ws = new WebSocket(url, ["parley.v1", "bearer.not-a-token"]);
          ws.onopen = () => ws.send("{}");
          ws.onclose = (e) => resolve({ code: e.code, reason: e.reason });
        });
        return { protocol, openAfterPings, inBand, big, clean, bad };
      },
      { alice, bob },
    );
    assert.equal(got.protocol, "parley.v1");
    assert.ok(got.openAfterPings, "both sockets open after three ping intervals");
    assert.equal(got.inBand.code, "ERROR_CODE_INVALID_ARGUMENT");
    assert.match(got.inBand.message, /malformed JSON/);
    assert.equal(got.big.code, 1009, `oversized frame closed with ${got.big.code} ${got.big.reason}`);
    assert.deepEqual(got.clean, { code: 1000, clean: true });
    assert.equal(got.bad.code, 4401, `bad token closed with ${got.bad.code} ${got.bad.reason}`);
    assert.deepEqual(errors, []);
    assert.ok(!server.problem(), server.problem());
  });
});
