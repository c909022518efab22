// Browser end-to-end test: a real parleyd (built from this repository, on
// random ports with a temporary data directory) and headless Chromium with
// two users in separate browser contexts, plus an admin. The steps run in
// order and share state, like one person's afternoon in the app.
//
//   npm run e2e                      (from clients/web)
//   PARLEYD_BIN=/path/parleyd npm run e2e   to skip the go build
//
// Screenshots and server logs go to clients/web/test-results/.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { copyFile, readFile } from "node:fs/promises";
import path from "node:path";
import {
  ParleyServer,
  buildServer,
  freePort,
  launchBrowser,
  newUserPage,
  parleyd,
  removeDir,
  screenshot,
  tempDir,
  webDir,
  writeArtifact,
} from "./harness.mjs";

const T = 20_000; // default wait for something to show up

const ALICE = "alice";
const BOB = "bob";
const ADMIN = "admin";
const PW = "correct-horse-battery";
const ADMIN_PW = "admin-password-1";

/** conversation returns a locator for the open conversation pane. */
const pane = (page) => page.getByTestId("conversation");

async function register(page, baseURL, username, password) {
  await page.goto(baseURL + "/");
  await page.getByRole("tab", { name: "Register" }).click();
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Create account" }).click();
  await waitConnected(page);
}

async function login(page, baseURL, username, password) {
  await page.goto(baseURL + "/");
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.locator("form").getByRole("button", { name: "Log in" }).click();
  await waitConnected(page);
}

async function waitConnected(page, timeout = T) {
  await page.locator('[data-testid="status"][data-phase="connected"]').waitFor({ timeout });
}

async function statusText(page) {
  return (await page.getByTestId("status-text").textContent()) ?? "";
}

async function send(page, text) {
  const box = pane(page).getByTestId("composer");
  await box.click();
  await box.fill(text);
  await box.press("Enter");
}

/** messageIn waits for a message (by text) in the open conversation. */
async function messageIn(page, text, timeout = T) {
  const m = pane(page).getByTestId("message").filter({ hasText: text }).first();
  await m.waitFor({ timeout });
  return m;
}

/** texts lists the texts of the open conversation's messages in order. */
async function texts(page) {
  return pane(page).getByTestId("text").allTextContents();
}

/** ids lists the server ids of the open conversation's messages. */
async function ids(page) {
  return pane(page)
    .getByTestId("message")
    .evaluateAll((els) => els.map((e) => e.getAttribute("data-id")));
}

async function openConv(page, key) {
  await page.locator(`button.conv[data-conv="${key}"]`).click();
  await page.locator(`[data-testid="conversation"][data-conv="${key}"]`).waitFor({ timeout: T });
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

describe("parley web app against a real parleyd", { timeout: 240_000 }, () => {
  let tmp, server, browser, alice, bob, admin;
  const pages = [];

  before(async () => {
    tmp = await tempDir();
    const bin = await buildServer(tmp);
    const dataDir = path.join(tmp, "data");
    await parleyd(bin, ["user", "add", "--username", ADMIN, "--password", ADMIN_PW, "--role", "admin", "--data-dir", dataDir]);
    server = new ParleyServer({ bin, dataDir, httpPort: await freePort(), grpcPort: await freePort() });
    await server.start();
    browser = await launchBrowser();
    alice = await newUserPage(browser, ALICE);
    bob = await newUserPage(browser, BOB);
    pages.push(alice, bob);
  });

  after(async () => {
    const errors = pages.flatMap((p) => p.errors);
    if (errors.length) await writeArtifact("browser-console.txt", errors.join("\n") + "\n");
    await browser?.close();
    await server?.stop();
    if (tmp) await removeDir(tmp);
  });

  it("serves the app and refuses the stream without a token", async () => {
    const res = await fetch(server.baseURL + "/");
    assert.equal(res.status, 200);
    assert.match(await res.text(), /<div id="root">/);
    const api = await fetch(server.baseURL + "/api/rooms");
    assert.equal(api.status, 401);
  });

  it("registers two users who see each other online", async () => {
    await register(alice.page, server.baseURL, ALICE, PW);
    await register(bob.page, server.baseURL, BOB, PW);
    for (const [me, other] of [
      [alice, BOB],
      [bob, ALICE],
    ]) {
      await me.page.locator(`[data-testid="online-users"] [data-user="${other}"]`).waitFor({ timeout: T });
      await waitFor(async () => /\b2 online\b/.test((await me.page.getByTestId("online-count").textContent()) ?? ""), "2 online");
    }
    assert.match(await statusText(alice.page), /Connected/);
    await screenshot(alice.page, "online");
  });

  it("chats in the global room both ways, Enter sends, Shift+Enter breaks lines", async () => {
    await send(alice.page, "Hello from Alice — ¡hola!");
    const seen = await messageIn(bob.page, "Hello from Alice");
    assert.equal(await seen.getByTestId("sender").textContent(), ALICE);
    assert.match((await seen.locator("time").textContent()) ?? "", /\d/);

    const box = pane(bob.page).getByTestId("composer");
    await box.click();
    await box.type("Hi Alice,");
    await box.press("Shift+Enter");
    await box.type("Bob here.");
    await box.press("Enter");
    const reply = await messageIn(alice.page, "Bob here.");
    assert.equal(await reply.getByTestId("text").textContent(), "Hi Alice,\nBob here.");
    assert.equal(await reply.getByTestId("sender").textContent(), BOB);
    // Each side shows each message once.
    for (const p of [alice.page, bob.page]) {
      await waitFor(async () => (await texts(p)).length === 2, "two messages");
      assert.deepEqual(await texts(p), ["Hello from Alice — ¡hola!", "Hi Alice,\nBob here."]);
    }
    await screenshot(bob.page, "global-chat");
  });

  it("shows the typing indicator and clears it", async () => {
    const box = pane(alice.page).getByTestId("composer");
    await box.click();
    await box.type("I am typing somet", { delay: 40 });
    const indicator = bob.page.getByTestId("typing");
    await waitFor(async () => (await indicator.textContent()) === `${ALICE} is typing…`, "alice is typing…");
    await screenshot(bob.page, "typing");
    // No keystrokes for a while: the throttle sends a stop.
    await waitFor(async () => (await indicator.textContent()) === "", "typing indicator to clear", 10_000);
    await box.fill("");
  });

  it("sends a private message from the online list, with an unread count", async () => {
    await bob.page.getByRole("button", { name: `Message ${ALICE} privately` }).click();
    await bob.page.locator(`[data-testid="conversation"][data-conv="dm:${ALICE}"]`).waitFor({ timeout: T });
    await send(bob.page, "psst, a secret for Alice");
    // Alice is in #general: the DM shows up with one unread.
    const dmButton = alice.page.locator(`button.conv[data-conv="dm:${BOB}"]`);
    await dmButton.waitFor({ timeout: T });
    await waitFor(async () => (await dmButton.getByTestId("unread").textContent()) === "1", "1 unread");
    await screenshot(alice.page, "dm-unread");
    await dmButton.click();
    await messageIn(alice.page, "psst, a secret for Alice");
    assert.equal(await dmButton.getByTestId("unread").count(), 0);
    await send(alice.page, "secret received");
    await messageIn(bob.page, "secret received");
    // The private messages did not leak into #general.
    await openConv(bob.page, "room:general");
    assert.ok(!(await texts(bob.page)).some((t) => t.includes("secret")));
  });

  it("creates and joins a room, with member counts and room chat", async () => {
    await alice.page.getByLabel("Create or join a room").fill("gophers");
    await alice.page.getByLabel("Create or join a room").press("Enter");
    await alice.page.locator('[data-testid="conversation"][data-conv="room:gophers"]').waitFor({ timeout: T });
    await waitFor(async () => (await alice.page.getByTestId("member-count").textContent()) === "1 member", "1 member");

    // Bob finds the room in the list and joins it.
    await bob.page.getByRole("button", { name: "Refresh rooms" }).click();
    const join = bob.page.getByRole("button", { name: "Join gophers" });
    await join.waitFor({ timeout: T });
    await join.click();
    await bob.page.locator('[data-testid="conversation"][data-conv="room:gophers"]').waitFor({ timeout: T });
    await waitFor(async () => (await alice.page.getByTestId("member-count").textContent()) === "2 members", "2 members for alice");
    await waitFor(async () => (await bob.page.getByTestId("member-count").textContent()) === "2 members", "2 members for bob");

    await send(bob.page, "Hi gophers!");
    await messageIn(alice.page, "Hi gophers!");
    // The room message is not in #general.
    await openConv(alice.page, "room:general");
    assert.ok(!(await texts(alice.page)).includes("Hi gophers!"));
    await openConv(alice.page, "room:gophers");
    await screenshot(alice.page, "room");
  });

  it("uploads a file with progress and downloads it", async () => {
    const content = Buffer.alloc(3 << 20, "parley file transfer test\n");
    // Record whether the progress bar showed up, however fast the upload is.
    await alice.page.evaluate(() => {
      window.__sawProgress = false;
      new MutationObserver(() => {
        if (document.querySelector('[data-testid="upload-progress"]')) window.__sawProgress = true;
      }).observe(document.body, { childList: true, subtree: true });
    });
    await pane(alice.page).getByTestId("file-input").setInputFiles({ name: "notes.txt", mimeType: "text/plain", buffer: content });
    const fileMsg = pane(bob.page).getByTestId("file").filter({ hasText: "notes.txt" }).first();
    await fileMsg.waitFor({ timeout: 30_000 });
    assert.equal(await alice.page.evaluate(() => window.__sawProgress), true, "progress bar shown");
    await pane(alice.page).getByTestId("file").filter({ hasText: "notes.txt" }).first().waitFor({ timeout: T });
    await screenshot(bob.page, "file-message");

    const [download] = await Promise.all([
      bob.page.waitForEvent("download", { timeout: T }),
      fileMsg.getByTestId("file-download").click(),
    ]);
    assert.equal(download.suggestedFilename(), "notes.txt");
    const got = await readFile(await download.path());
    assert.equal(got.length, content.length);
    assert.ok(got.equals(content), "downloaded bytes equal the upload");
    // No token ever went into a URL.
    assert.ok(!download.url().includes("token"), download.url());

    // Bob leaves the room: back to #general, and the count drops for Alice.
    await pane(bob.page).getByRole("button", { name: "Leave room" }).click();
    await bob.page.locator('[data-testid="conversation"][data-conv="room:general"]').waitFor({ timeout: T });
    await bob.page.getByRole("button", { name: "Join gophers" }).waitFor({ timeout: T });
    await waitFor(async () => (await alice.page.getByTestId("member-count").textContent()) === "1 member", "1 member after leave");
  });

  it("keeps a plain user out of the admin page", async () => {
    assert.equal(await bob.page.getByRole("link", { name: "Admin" }).count(), 0, "no Admin link for a user");
    await bob.page.goto(server.baseURL + "/#/admin");
    await waitConnected(bob.page);
    await bob.page.getByTestId("admin-denied").waitFor({ timeout: T });
    assert.equal(await bob.page.getByTestId("admin-denied").textContent(), "Not authorized");
    await waitFor(
      // The server's words, then the code.
      async () => /^Server: \S.* \(PermissionDenied\)$/.test((await bob.page.getByTestId("admin-server-answer").textContent()) ?? ""),
      "the server's PermissionDenied with its message",
    );
    await screenshot(bob.page, "admin-denied");
    await bob.page.getByRole("link", { name: "Back to chat" }).click();
    await pane(bob.page).waitFor({ timeout: T });
  });

  it("lets an admin see live stats and broadcast to everyone", async () => {
    admin = await newUserPage(browser, ADMIN);
    pages.push(admin);
    await login(admin.page, server.baseURL, ADMIN, ADMIN_PW);
    await admin.page.getByRole("link", { name: "Admin" }).click();
    await admin.page.getByTestId("stats").waitFor({ timeout: T });
    await waitFor(async () => Number(await admin.page.getByTestId("stat-online").textContent()) >= 3, "3 online users in stats");
    assert.ok(Number(await admin.page.getByTestId("stat-connections").textContent()) >= 3);
    // Two polls make a line.
    await admin.page.locator('[data-testid="stats-chart"] polyline').first().waitFor({ state: "attached", timeout: 10_000 });

    await admin.page.getByLabel("Announcement", { exact: true }).fill("Maintenance at noon");
    await admin.page.getByRole("button", { name: "Send broadcast" }).click();
    await waitFor(async () => /Broadcast queued to \d+ session/.test((await admin.page.getByTestId("broadcast-result").textContent()) ?? ""), "broadcast result");
    for (const p of [alice.page, bob.page]) {
      await p.getByTestId("broadcast").filter({ hasText: "Maintenance at noon" }).waitFor({ timeout: T });
    }
    // A room broadcast reaches the room's members only (Bob left #gophers).
    await admin.page.getByLabel("Announcement", { exact: true }).fill("Gophers meetup at 3");
    await admin.page.getByLabel("To", { exact: true }).selectOption("gophers");
    await admin.page.getByRole("button", { name: "Send broadcast" }).click();
    await alice.page.getByTestId("broadcast").filter({ hasText: "to #gophers: Gophers meetup at 3" }).waitFor({ timeout: T });
    await new Promise((r) => setTimeout(r, 1_000));
    assert.equal(await bob.page.getByTestId("broadcast").filter({ hasText: "Gophers meetup" }).count(), 0);
    await admin.page.getByLabel("To", { exact: true }).selectOption("");
    await screenshot(admin.page, "admin-stats");
    await screenshot(alice.page, "broadcast");
  });

  it("reconnects after a server restart and shows what was missed, once", async () => {
    // Alice is in #general.
    await openConv(alice.page, "room:general");
    const before = await texts(alice.page);

    await server.stop();
    for (const p of [alice.page, bob.page]) {
      await waitFor(async () => /Reconnecting…/.test(await statusText(p)), "Reconnecting…");
    }
    await screenshot(alice.page, "reconnecting");
    // Alice's network drops too, so she stays away while Bob comes back.
    await alice.context.setOffline(true);
    await server.start();
    await waitConnected(bob.page, 30_000);
    await openConv(bob.page, "room:general");
    const missed = ["while you were away 1", "while you were away 2", "while you were away 3"];
    for (const t of missed) {
      await send(bob.page, t);
      await messageIn(bob.page, t);
    }
    // Settled (acked) on Bob's side before Alice returns.
    await waitFor(async () => !(await ids(bob.page)).includes(""), "acks for Bob's messages");
    // And a private message.
    await openConv(bob.page, `dm:${ALICE}`);
    await send(bob.page, "a private word while you were away");
    await waitFor(async () => !(await ids(bob.page)).includes(""), "ack for the DM");
    await openConv(bob.page, "room:general");

    await alice.context.setOffline(false);
    await waitConnected(alice.page, 30_000);
    for (const t of missed) await messageIn(alice.page, t);
    await waitFor(async () => /Restored/.test(await statusText(alice.page)), "Restored", 10_000).catch(() => {});
    await screenshot(alice.page, "restored");

    const after = await texts(alice.page);
    assert.deepEqual(after, [...before, ...missed], "history then the missed messages, in order");
    const shown = (await ids(alice.page)).filter(Boolean);
    assert.equal(new Set(shown).size, shown.length, "no message twice");

    // The missed private message is waiting, unread, exactly once.
    const dmButton = alice.page.locator(`button.conv[data-conv="dm:${BOB}"]`);
    await waitFor(async () => (await dmButton.getByTestId("unread").textContent()) === "1", "1 unread DM after the restart");
    await dmButton.click();
    await messageIn(alice.page, "a private word while you were away");
    assert.equal(await pane(alice.page).getByTestId("message").filter({ hasText: "a private word" }).count(), 1);
    const dmIds = (await ids(alice.page)).filter(Boolean);
    assert.equal(new Set(dmIds).size, dmIds.length, "no DM twice");
    await openConv(alice.page, "room:general");

    // The stream works both ways after the restart.
    await send(alice.page, "back online");
    await messageIn(bob.page, "back online");
    const bobIds = (await ids(bob.page)).filter(Boolean);
    assert.equal(new Set(bobIds).size, bobIds.length, "no duplicates on Bob's side either");
  });

  it("takes the README screenshot: two users chatting", async () => {
    await openConv(bob.page, "room:general");
    await send(alice.page, "Welcome back, everyone. Files and rooms survived the restart.");
    await messageIn(bob.page, "Files and rooms survived");
    await send(bob.page, "Great — the file is in #gophers.");
    await messageIn(alice.page, "the file is in #gophers");
    await waitFor(async () => (await statusText(bob.page)) === "Connected", "the Restored notice to settle", 10_000);
    await bob.page.getByRole("button", { name: "Dismiss", exact: true }).evaluateAll((bs) => bs.forEach((b) => b.click()));
    const box = pane(alice.page).getByTestId("composer");
    await box.click();
    await box.type("Sounds g", { delay: 30 });
    await waitFor(async () => (await bob.page.getByTestId("typing").textContent()) === `${ALICE} is typing…`, "typing");
    const file = await screenshot(bob.page, "readme");
    if (process.env.PARLEY_README_SCREENSHOT) {
      await copyFile(file, path.join(webDir, "docs", "screenshot.png"));
    }
    await box.fill("");
  });

  it("lets an admin disconnect and then deactivate a user", async () => {
    const a = admin.page;
    await a.getByRole("link", { name: "Admin" }).click();
    await a.getByLabel("Username").fill(BOB);
    await a.getByLabel("Reason (optional)").fill("e2e check");
    await a.getByRole("button", { name: "Disconnect", exact: true }).click();
    await waitFor(async () => /Closed 1 session of bob/.test((await a.getByTestId("users-result").textContent()) ?? ""), "disconnect result");
    // Told why, and not reconnecting by itself.
    await bob.page.locator('[data-testid="status"][data-phase="stopped"]').waitFor({ timeout: T });
    assert.match((await bob.page.getByTestId("status").textContent()) ?? "", /disconnected by an administrator: e2e check/);
    await screenshot(bob.page, "disconnected-by-admin");
    await bob.page.getByRole("button", { name: "Reconnect" }).click();
    await waitConnected(bob.page);

    await a.getByRole("button", { name: "Deactivate" }).click();
    await waitFor(async () => /bob is deactivated/.test((await a.getByTestId("users-result").textContent()) ?? ""), "deactivate result");
    // The stream closes; a reconnect is refused and Bob lands on the login screen.
    const loginForm = bob.page.getByRole("button", { name: "Log in" }).first();
    await waitFor(
      async () => (await loginForm.isVisible()) || (await bob.page.locator('[data-testid="status"][data-phase="stopped"]').count()) > 0,
      "bob's session to end",
    );
    if (!(await loginForm.isVisible())) await bob.page.getByRole("button", { name: "Reconnect" }).click();
    await loginForm.waitFor({ timeout: T });
    assert.match((await bob.page.getByRole("status").first().textContent()) ?? "", /Signed out/);
    await screenshot(bob.page, "deactivated");
    // And the password no longer works.
    await bob.page.getByLabel("Username").fill(BOB);
    await bob.page.getByLabel("Password").fill(PW);
    await bob.page.locator("form").getByRole("button", { name: "Log in" }).click();
    await bob.page.getByRole("alert").waitFor({ timeout: T });
  });

  it("logged no errors in the browsers", () => {
    const errors = pages
      .flatMap((p) => p.errors)
      // Failed connection attempts while the server was down are expected.
      .filter((e) => !/WebSocket|ERR_CONNECTION_REFUSED|ERR_INTERNET_DISCONNECTED|Failed to load resource/.test(e));
    assert.deepEqual(errors, []);
  });
});
