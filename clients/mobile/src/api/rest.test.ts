import { ApiError, historyPath, normalizeServerUrl, wsUrl } from "./rest";

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
  });
});
