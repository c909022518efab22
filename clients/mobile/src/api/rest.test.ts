import { ApiError, errorOf, historyAfterPath, historyPath, normalizeServerUrl, wsUrl } from "./rest";

describe("server URLs", () => {
  it.each([
    ["localhost:8080", "http://localhost:8080"],
    [" http://10.0.2.2:8080/ ", "http://10.0.2.2:8080"],
    ["https://chat.example.org//", "https://chat.example.org"],
  ])("normalizes %j", (raw, want) => {
    expect(normalizeServerUrl(raw)).toBe(want);
  });

  it("refuses empty and non-HTTP URLs", () => {
    expect(() => normalizeServerUrl("  ")).toThrow(ApiError);
    expect(() => normalizeServerUrl("ftp://x")).toThrow(/http/);
  });

  it("derives the /ws endpoint without any token in it", () => {
    expect(wsUrl("http://127.0.0.1:8080")).toBe("ws://127.0.0.1:8080/ws");
    expect(wsUrl("https://chat.example.org")).toBe("wss://chat.example.org/ws");
  });

  it("builds history queries for rooms and peers", () => {
    expect(historyPath("room:general")).toBe("/api/messages?room=general&limit=100");
    expect(historyPath("dm:bob.s", 20)).toBe("/api/messages?user=bob.s&limit=20");
    expect(historyAfterPath("room:general", 0, 5)).toBe("/api/messages?room=general&after_seq=0&limit=5");
    expect(historyAfterPath("dm:bob.s", 41, 100)).toBe("/api/messages?user=bob.s&after_seq=41&limit=100");
  });
});

describe("errorOf", () => {
  const answer = (status: number, body: string, contentType: string) =>
    new Response(body, { status, headers: { "Content-Type": contentType } });

  it("uses the message of the API's JSON error", async () => {
    const err = await errorOf(answer(403, '{"code":"PERMISSION_DENIED","message":"origin http://10.0.2.2:8080 is not allowed"}', "application/json"));
    expect([err.status, err.code, err.message]).toEqual([403, "PERMISSION_DENIED", "origin http://10.0.2.2:8080 is not allowed"]);
  });

  it("uses a plain-text body, on one line", async () => {
    const err = await errorOf(answer(403, "origin not allowed:\n start parleyd with --allowed-origins\n", "text/plain"));
    expect(err.message).toBe("origin not allowed: start parleyd with --allowed-origins");
  });

  it("falls back to the status for an HTML page or no body", async () => {
    expect((await errorOf(answer(502, "<html>bad gateway</html>", "text/html"))).message).toBe("HTTP 502");
    expect((await errorOf(answer(500, "", "text/plain"))).message).toBe("HTTP 500");
  });
});
