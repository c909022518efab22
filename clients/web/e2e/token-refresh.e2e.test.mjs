// Token lifetime end-to-end: with 15-second access tokens the app refreshes
// before expiry and hands the new token to the open stream in band, so the
// same stream (same session id) outlives several tokens; a reload in the same
// tab keeps the session (sessionStorage) and shows history once.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { ParleyServer, launchBrowser, newUserPage, removeDir, screenshot, tempDir } from "./harness.mjs";

describe("access token refresh", { timeout: 120_000 }, () => {
  let tmp, server, browser, user;

  before(async () => {
    tmp = await tempDir();
    server = await ParleyServer.launch(tmp, { logName: "parleyd-refresh", extraArgs: ["--access-ttl", "15s"] });
    browser = await launchBrowser();
    user = await newUserPage(browser, "carol");
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    if (tmp) await removeDir(tmp);
  });

  const stored = () => user.page.evaluate(() => JSON.parse(sessionStorage.getItem("parley.session") ?? "null"));
  const status = () => user.page.getByTestId("status");

  it("keeps one stream alive across several 15 s tokens", async () => {
    const p = user.page;
    await p.goto(server.baseURL + "/");
    await p.getByRole("tab", { name: "Register" }).click();
    await p.getByLabel("Username").fill("carol");
    await p.getByLabel("Password").fill("carol-password");
    await p.getByRole("button", { name: "Create account" }).click();
    await p.locator('[data-testid="status"][data-phase="connected"]').waitFor({ timeout: 20_000 });
    const session = await status().getAttribute("data-session");
    const first = await stored();
    assert.ok(session, "a session id");
    assert.ok(first.accessExpiresAt - Date.now() <= 16_000, "the server issued a short token");

    // Watch for 40 s: more than two lifetimes.
    const deadline = Date.now() + 40_000;
    while (Date.now() < deadline) {
      const phase = await status().getAttribute("data-phase");
      if (phase !== "connected") {
        // Say why: the status line carries the stream's end detail, and the
        // harness knows whether the server was stopped from outside.
        const why = `page shows ${phase}: "${await status().textContent()}"`;
        assert.fail(server.problem() ? `${why}; ${server.problem()}` : why);
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(await status().getAttribute("data-session"), session, "the same stream throughout");
    const now = await stored();
    assert.notEqual(now.accessToken, first.accessToken, "the access token was refreshed");
    assert.notEqual(now.refreshToken, first.refreshToken, "the refresh token rotated");
    assert.ok(now.accessExpiresAt > Date.now(), "the current token is valid");

    const box = p.getByTestId("composer");
    await box.fill("still here after 40 s");
    await box.press("Enter");
    await p.locator('[data-testid="message"][data-id]:not([data-id=""])').filter({ hasText: "still here" }).waitFor({ timeout: 10_000 });
    await screenshot(p, "token-refresh");
  });

  it("stays logged in across a reload, showing history once", async () => {
    const p = user.page;
    await p.reload();
    await p.locator('[data-testid="status"][data-phase="connected"]').waitFor({ timeout: 20_000 });
    await p.getByTestId("message").filter({ hasText: "still here" }).first().waitFor({ timeout: 10_000 });
    assert.equal(await p.getByTestId("message").filter({ hasText: "still here" }).count(), 1);
  });
});
