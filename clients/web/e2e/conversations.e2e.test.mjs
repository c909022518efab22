// The sidebar after a reload, room counts, and a refused origin, end to end:
// a real parleyd and headless Chromium.
//
// After a reload the page knows nothing the live stream has not said, and
// the stream only names people who are online: the sidebar's direct
// conversations come from Chat.ListConversations, so one with someone now
// offline is still there, with its last message, and can be written to.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { ParleyServer, freePort, launchBrowser, newUserPage, removeDir, screenshot, tempDir } from "./harness.mjs";

const T = 20_000;
const PW = "correct-horse-battery";

const pane = (page) => page.getByTestId("conversation");

async function waitConnected(page, timeout = T) {
  await page.locator('[data-testid="status"][data-phase="connected"]').waitFor({ timeout });
}

async function register(page, baseURL, username) {
  await page.goto(baseURL + "/");
  await page.getByRole("tab", { name: "Register" }).click();
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(PW);
  await page.getByRole("button", { name: "Create account" }).click();
  await waitConnected(page);
}

async function send(page, text) {
  const box = pane(page).getByTestId("composer");
  await box.click();
  await box.fill(text);
  await box.press("Enter");
}

async function messageIn(page, text) {
  await pane(page).getByTestId("message").filter({ hasText: text }).first().waitFor({ timeout: T });
}

async function waitFor(fn, what, timeout = T) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

const sub = (page, key) => page.locator(`button.conv[data-conv="${key}"]`).getByTestId("conv-sub").textContent();
const roomSub = (page, room) => page.locator(`[data-room="${room}"]`).getByTestId("conv-sub").textContent();

describe("conversations and counts", { timeout: 180_000 }, () => {
  let tmp, server, browser, alice, bob, carol;

  before(async () => {
    tmp = await tempDir();
    server = await ParleyServer.launch(tmp, { logName: "parleyd-conversations" });
    browser = await launchBrowser();
    alice = await newUserPage(browser, "alice");
    bob = await newUserPage(browser, "bob");
    carol = await newUserPage(browser, "carol");
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    if (tmp) await removeDir(tmp);
  });

  it("after a reload lists a DM with someone now offline, which opens and takes a message", async () => {
    await register(alice.page, server.baseURL, "alice");
    await register(bob.page, server.baseURL, "bob");
    await bob.page.getByRole("button", { name: "Message alice privately" }).click();
    await send(bob.page, "see you tomorrow");
    await messageIn(bob.page, "see you tomorrow");
    await alice.page.locator('button.conv[data-conv="dm:bob"]').waitFor({ timeout: T });

    // Bob leaves; Alice reloads (the tab keeps her session).
    await bob.context.close();
    await waitFor(async () => (await alice.page.getByTestId("online-count").textContent())?.includes("1"), "bob offline");
    await alice.page.reload();
    await waitConnected(alice.page);
    const dm = alice.page.locator('button.conv[data-conv="dm:bob"]');
    await dm.waitFor({ timeout: T });
    assert.equal(await alice.page.locator('[data-testid="online-users"] [data-user="bob"]').count(), 0, "bob is not online");
    await waitFor(async () => (await sub(alice.page, "dm:bob")) === "bob: see you tomorrow", "the DM's last message");
    await screenshot(alice.page, "conversations-after-reload");

    await dm.click();
    await alice.page.locator('[data-testid="conversation"][data-conv="dm:bob"]').waitFor({ timeout: T });
    await messageIn(alice.page, "see you tomorrow"); // its history
    await send(alice.page, "written while you were away");
    await waitFor(async () => (await pane(alice.page).locator(".msg.pending").count()) === 0, "the message stored");
    await waitFor(async () => (await sub(alice.page, "dm:bob")) === "You: written while you were away", "the preview follows");

    // Bob, back on a fresh page, finds it.
    bob = await newUserPage(browser, "bob");
    await bob.page.goto(server.baseURL + "/");
    await bob.page.getByLabel("Username").fill("bob");
    await bob.page.getByLabel("Password").fill(PW);
    await bob.page.locator("form").getByRole("button", { name: "Log in" }).click();
    await waitConnected(bob.page);
    await waitFor(async () => (await sub(bob.page, "dm:alice")) === "alice: written while you were away", "bob's DM preview");
    await bob.page.locator('button.conv[data-conv="dm:alice"]').click();
    await messageIn(bob.page, "written while you were away");
  });

  it("shows members and how many are online, for rooms nobody is in right now too", async () => {
    // Carol makes a room and goes away: it is still listed, with 0 online.
    await register(carol.page, server.baseURL, "carol");
    await carol.page.getByLabel("Create or join a room").fill("lonely");
    await carol.page.getByLabel("Create or join a room").press("Enter");
    await carol.page.locator('[data-testid="conversation"][data-conv="room:lonely"]').waitFor({ timeout: T });
    await waitFor(async () => (await carol.page.getByTestId("member-count").textContent()) === "1 member", "carol in lonely");
    await carol.context.close();

    await alice.page.getByRole("button", { name: "Refresh rooms" }).click();
    await waitFor(async () => (await roomSub(alice.page, "lonely")) === "1 member · 0 online", "lonely: 1 member · 0 online");
    await alice.page.getByRole("button", { name: "Join lonely" }).waitFor({ timeout: T });
    // general: everyone registered, alice and bob online.
    await waitFor(async () => (await roomSub(alice.page, "general")) === "3 members · 2 online", "general: 3 members · 2 online");

    await alice.page.getByRole("button", { name: "Join lonely" }).click();
    await alice.page.locator('[data-testid="conversation"][data-conv="room:lonely"]').waitFor({ timeout: T });
    await alice.page.getByRole("button", { name: "Refresh rooms" }).click();
    await waitFor(async () => (await roomSub(alice.page, "lonely")) === "2 members · 1 online", "lonely: 2 members · 1 online");
    await waitFor(async () => (await alice.page.getByTestId("room-online").textContent()) === " · 1 online", "the header's online count");
    await screenshot(alice.page, "room-counts");
  });

  it("says why a page served under an origin not in --allowed-origins cannot register", async () => {
    // 127.0.0.2 is loopback too, but not the origin parleyd admits: a
    // proxy there makes the page's origin http://127.0.0.2:PORT.
    const port = await freePort();
    const target = new URL(server.baseURL);
    const proxy = net.createServer((c) => {
      const up = net.connect(Number(target.port), target.hostname);
      c.pipe(up).pipe(c);
      const end = () => {
        c.destroy();
        up.destroy();
      };
      c.on("error", end);
      up.on("error", end);
    });
    await new Promise((resolve, reject) => proxy.listen(port, "127.0.0.2", resolve).once("error", reject));
    const stranger = await newUserPage(browser, "stranger");
    try {
      const p = stranger.page;
      await p.goto(`http://127.0.0.2:${port}/`);
      await p.getByRole("tab", { name: "Register" }).click();
      await p.getByLabel("Username").fill("stranger");
      await p.getByLabel("Password").fill(PW);
      await p.getByRole("button", { name: "Create account" }).click();
      const alert = p.getByRole("alert");
      await alert.waitFor({ timeout: T });
      const text = (await alert.textContent()) ?? "";
      // The server's words, not only the code.
      assert.match(text, /origin/i, `alert: ${text}`);
      assert.match(text, /\(PermissionDenied\)$/, `alert: ${text}`);
      assert.notEqual(text.trim(), "PermissionDenied");
      await screenshot(p, "refused-origin");
    } finally {
      await stranger.context.close();
      await new Promise((resolve) => proxy.close(resolve));
    }
  });
});
