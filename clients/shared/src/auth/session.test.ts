import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { TokensSchema } from "../gen/chat/v1/auth_pb";
import { Role, UserSchema } from "../gen/chat/v1/chat_pb";
import { SessionManager, type AuthAnswer, type AuthBackend, type SessionData } from "./session";

class Refused extends Error {}

/** memoryAuth is an in-memory Auth service: each refresh token works once. */
function memoryAuth() {
  let n = 0;
  const live = new Set<string>();
  const calls: string[] = [];
  let down = false;
  const answer = (username: string): AuthAnswer => {
    n += 1;
    const refreshToken = `r${n}`;
    live.add(refreshToken);
    const now = Date.now();
    return {
      user: create(UserSchema, { username, role: Role.ADMIN }),
      tokens: create(TokensSchema, {
        accessToken: `a${n}`,
        refreshToken,
        accessExpiresAt: timestampFromMs(now + 60_000),
        refreshExpiresAt: timestampFromMs(now + 3_600_000),
      }),
    };
  };
  const backend: AuthBackend = {
    register: async (u) => answer(u),
    login: async (u) => answer(u),
    refresh: async (rt) => {
      calls.push(rt);
      if (down) throw new Error("network down");
      if (!live.delete(rt)) throw new Refused("refresh token reused");
      return answer("ann");
    },
    logout: async (rt) => live.delete(rt),
    refused: (err) => err instanceof Refused,
    notLoggedIn: () => new Refused("not logged in"),
    noTokens: () => new Error("no tokens"),
  };
  return { backend, calls, live, setDown: (v: boolean) => (down = v) };
}

describe("SessionManager", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("shares one refresh among concurrent callers (refresh tokens are single-use)", async () => {
    const a = memoryAuth();
    const s = new SessionManager(a.backend);
    await s.login("ann", "pw");
    const [t1, t2] = await Promise.all([s.accessToken(true), s.accessToken(true)]);
    expect(t1).toBe("a2");
    expect(t2).toBe("a2");
    expect(a.calls).toEqual(["r1"]);
    expect(s.refreshes).toBe(1);
    expect(s.current?.role).toBe(Role.ADMIN);
    s.dispose();
  });

  it("ends the session when the refresh token is refused, and retries after a network error", async () => {
    const a = memoryAuth();
    const s = new SessionManager(a.backend);
    const seen: (SessionData | null)[] = [];
    await s.login("ann", "pw");
    s.subscribe((d) => seen.push(d));
    a.setDown(true);
    await expect(s.refresh()).rejects.toThrow("network down");
    expect(s.current).not.toBeNull();
    a.setDown(false);
    await vi.advanceTimersByTimeAsync(5_000); // the retry
    expect(s.current?.accessToken).toBe("a2");
    a.live.clear();
    await expect(s.refresh()).rejects.toBeInstanceOf(Refused);
    expect(s.current).toBeNull();
    expect(seen.at(-1)).toBeNull();
    await expect(s.accessToken()).rejects.toThrow("not logged in");
    s.dispose();
  });

  it("keeps the session in its store and drops an expired one", async () => {
    const a = memoryAuth();
    let saved: SessionData | null = null;
    const store = { load: () => saved, save: (d: SessionData | null) => (saved = d) };
    const s = new SessionManager(a.backend, store);
    await s.login("ann", "pw");
    expect(saved).toMatchObject({ username: "ann", accessToken: "a1" });
    s.dispose();
    const again = new SessionManager(a.backend, store);
    expect(again.current?.accessToken).toBe("a1");
    again.dispose();
    saved = { ...saved!, refreshExpiresAt: Date.now() - 1 };
    const stale = new SessionManager(a.backend, store);
    expect(stale.current).toBeNull();
    expect(saved).toBeNull();
    await again.logout();
  });
});
