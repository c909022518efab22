// SessionManager owns the tokens: it logs in through the app's AuthBackend
// (the web app gRPC-Web, the mobile app REST), keeps the access and refresh
// tokens in memory (mirrored to a SessionStore when the app gives one), and
// refreshes the access token before it expires. Refresh tokens are
// single-use, so at most one refresh call is in flight at a time.
//
// Used from the JS thread only.

import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { Tokens } from "../gen/chat/v1/auth_pb";
import { Role } from "../gen/chat/v1/chat_pb";
import type { User } from "../gen/chat/v1/chat_pb";
import { refreshDelay } from "./refresh";

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

/** AuthAnswer is what Register, Login and Refresh answer. */
export interface AuthAnswer {
  user?: User;
  tokens?: Tokens;
}

/** AuthBackend is how an app reaches the Auth service. */
export interface AuthBackend {
  register(username: string, password: string): Promise<AuthAnswer>;
  login(username: string, password: string): Promise<AuthAnswer>;
  refresh(refreshToken: string): Promise<AuthAnswer>;
  logout(refreshToken: string): Promise<unknown>;
  /** refused says whether err means the refresh token is no good (the session is over). */
  refused(err: unknown): boolean;
  /** notLoggedIn makes the error a call without a session rejects with. */
  notLoggedIn(): Error;
  /** noTokens makes the error for an answer that carries no tokens. */
  noTokens(): Error;
}

/** SessionStore keeps the session across reloads (the web app's sessionStorage). */
export interface SessionStore {
  load(): SessionData | null;
  save(d: SessionData | null): void;
}

function tsMs(ts: Timestamp | undefined, fallback: number): number {
  return ts ? timestampMs(ts) : fallback;
}

/** sessionFrom converts an auth answer into SessionData; it throws noTokens() without tokens. */
export function sessionFrom(
  res: AuthAnswer,
  fallbackUser: string,
  noTokens: () => Error,
  now = Date.now(),
): SessionData {
  const { user, tokens } = res;
  if (!tokens) throw noTokens();
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

/** isStaff says whether a role may moderate (and open the admin page). */
export function isStaff(role: Role): boolean {
  return role === Role.MODERATOR || role === Role.ADMIN;
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

  constructor(
    private readonly auth: AuthBackend,
    private readonly store?: SessionStore,
  ) {
    let saved: SessionData | null = null;
    try {
      saved = store?.load() ?? null;
    } catch {
      saved = null;
    }
    if (saved && saved.refreshExpiresAt > Date.now()) this.set(saved);
    else if (store) this.save(null);
  }

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
    const res = await this.auth.register(username, password);
    return this.set(sessionFrom(res, username, () => this.auth.noTokens()));
  }

  async login(username: string, password: string): Promise<SessionData> {
    const res = await this.auth.login(username, password);
    return this.set(sessionFrom(res, username, () => this.auth.noTokens()));
  }

  /** logout revokes the refresh token (best effort) and forgets the session. */
  async logout(): Promise<void> {
    const d = this.data;
    this.set(null);
    if (d) {
      try {
        await this.auth.logout(d.refreshToken);
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
   * expires within 10 s (or when force is set, e.g. after Unauthenticated or 4401).
   */
  async accessToken(force = false): Promise<string> {
    const d = this.data;
    if (!d) throw this.auth.notLoggedIn();
    if (!force && d.accessExpiresAt - Date.now() > 10_000) return d.accessToken;
    return (await this.refresh()).accessToken;
  }

  /** refresh trades the refresh token for new tokens; calls share one flight. */
  refresh(): Promise<SessionData> {
    if (this.inflight) return this.inflight;
    const d = this.data;
    if (!d) return Promise.reject(this.auth.notLoggedIn());
    this.inflight = this.auth
      .refresh(d.refreshToken)
      .then((res) => {
        const next = sessionFrom(res, d.username, () => this.auth.noTokens());
        this.refreshes += 1;
        return this.set(next);
      })
      .catch((err: unknown) => {
        // A refused refresh token ends the session; a network error is
        // retried by the next schedule.
        if (this.auth.refused(err)) {
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
    this.save(d);
    for (const fn of [...this.listeners]) fn(d);
    return d as SessionData;
  }

  private save(d: SessionData | null): void {
    try {
      this.store?.save(d);
    } catch {
      // Storage full or disabled: memory is enough.
    }
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
