// SessionManager owns the tokens: it logs in over REST, keeps the access and
// refresh tokens in memory only (nothing is written to device storage), and
// refreshes the access token before it expires. Refresh tokens are
// single-use, so at most one refresh call is in flight at a time.

import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { Tokens } from "../../../shared/src/gen/chat/v1/auth_pb";
import { Role } from "../../../shared/src/gen/chat/v1/chat_pb";
import type { User } from "../../../shared/src/gen/chat/v1/chat_pb";
import { ApiError, type RestClient } from "../api/rest";
import { refreshDelay } from "../../../shared/src/auth/refresh";

/** SessionData is what a login gives: who, and the tokens with expiries (ms). */
export interface SessionData {
  username: string;
  role: Role;
  accessToken: string;
  accessExpiresAt: number;
  /** accessIssuedAt is when this client received the token (ms). */
  accessIssuedAt: number;
  refreshToken: string;
  refreshExpiresAt: number;
}

function tsMs(ts: Timestamp | undefined, fallback: number): number {
  return ts ? timestampMs(ts) : fallback;
}

/** sessionFrom converts an auth answer into SessionData. */
export function sessionFrom(user: User | undefined, tokens: Tokens | undefined, fallbackUser: string, now = Date.now()): SessionData {
  if (!tokens) throw new ApiError(500, "INTERNAL", "server returned no tokens");
  return {
    username: user?.username || fallbackUser,
    role: user?.role ?? Role.USER,
    accessToken: tokens.accessToken,
    accessExpiresAt: tsMs(tokens.accessExpiresAt, now + 5 * 60_000),
    accessIssuedAt: now,
    refreshToken: tokens.refreshToken,
    refreshExpiresAt: tsMs(tokens.refreshExpiresAt, now + 24 * 3600_000),
  };
}

type Listener = (s: SessionData | null) => void;

/**
 * SessionManager holds the current session of one server. Listeners hear
 * about every change: login, refreshed tokens (the live stream forwards the
 * new access token in band), logout.
 */
export class SessionManager {
  private data: SessionData | null = null;
  private listeners = new Set<Listener>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private inflight: Promise<SessionData> | null = null;
  /** refreshes counts successful refreshes (shown in diagnostics and tests). */
  refreshes = 0;

  constructor(readonly rest: RestClient) {}

  get current(): SessionData | null {
    return this.data;
  }

  subscribe(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => {
      this.listeners.delete(fn);
    };
  }

  async register(username: string, password: string): Promise<SessionData> {
    const res = await this.rest.register(username, password);
    return this.set(sessionFrom(res.user, res.tokens, username));
  }

  async login(username: string, password: string): Promise<SessionData> {
    const res = await this.rest.login(username, password);
    return this.set(sessionFrom(res.user, res.tokens, username));
  }

  /** logout revokes the refresh token (best effort) and forgets the session. */
  async logout(): Promise<void> {
    const d = this.data;
    this.set(null);
    if (d) {
      try {
        await this.rest.logout(d.refreshToken);
      } catch {
        // The token expires on its own; nothing else to do.
      }
    }
  }

  /** dispose stops the refresh timer without revoking anything. */
  dispose(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.listeners.clear();
  }

  /**
   * accessToken returns a usable access token, refreshing first when it
   * expires within 10 s (or when force is set, e.g. after a 401 or 4401).
   */
  async accessToken(force = false): Promise<string> {
    const d = this.data;
    if (!d) throw new ApiError(401, "UNAUTHENTICATED", "not logged in");
    if (!force && d.accessExpiresAt - Date.now() > 10_000) return d.accessToken;
    return (await this.refresh()).accessToken;
  }

  /** refresh trades the refresh token for new tokens; calls share one flight. */
  refresh(): Promise<SessionData> {
    if (this.inflight) return this.inflight;
    const d = this.data;
    if (!d) return Promise.reject(new ApiError(401, "UNAUTHENTICATED", "not logged in"));
    this.inflight = this.rest
      .refresh(d.refreshToken)
      .then((res) => {
        this.refreshes += 1;
        return this.set(sessionFrom(res.user, res.tokens, d.username));
      })
      .catch((err: unknown) => {
        // A refused refresh token ends the session; a network error is
        // retried by the next schedule.
        if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
          if (this.data === d) this.set(null);
        } else if (this.data === d) {
          this.schedule(d, 5_000);
        }
        throw err;
      })
      .finally(() => {
        this.inflight = null;
      });
    return this.inflight;
  }

  private set(d: SessionData | null): SessionData {
    this.data = d;
    clearTimeout(this.timer);
    this.timer = undefined;
    if (d) this.schedule(d);
    for (const fn of [...this.listeners]) fn(d);
    return d as SessionData;
  }

  private schedule(d: SessionData, delay?: number): void {
    clearTimeout(this.timer);
    const wait = delay ?? refreshDelay(Date.now(), d.accessIssuedAt, d.accessExpiresAt);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.refresh().catch(() => {});
    }, wait);
  }
}
