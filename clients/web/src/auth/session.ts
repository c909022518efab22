// Session owns the tokens: it logs in, keeps the access and refresh tokens in
// memory (mirrored to sessionStorage so a reload in the same tab stays logged
// in), and refreshes the access token before it expires. Refresh tokens are
// single-use, so at most one Refresh call is in flight at a time.

import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { Auth } from "../../../shared/src/gen/chat/v1/auth_pb";
import type { Tokens } from "../../../shared/src/gen/chat/v1/auth_pb";
import { Role } from "../../../shared/src/gen/chat/v1/chat_pb";
import type { User } from "../../../shared/src/gen/chat/v1/chat_pb";
import { unaryDefinition } from "../rpc/adapter";
import { RpcError, unary } from "../rpc/client";
import { grpc } from "@improbable-eng/grpc-web";
import { refreshDelay } from "../../../shared/src/auth/refresh";

const registerDef = unaryDefinition(Auth.method.register);
const loginDef = unaryDefinition(Auth.method.login);
const refreshDef = unaryDefinition(Auth.method.refresh);
const logoutDef = unaryDefinition(Auth.method.logout);

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

const storageKey = "parley.session";

function tsMs(ts: Timestamp | undefined, fallback: number): number {
  return ts ? timestampMs(ts) : fallback;
}

function fromTokens(user: User | undefined, tokens: Tokens | undefined, fallbackUser?: string): SessionData {
  if (!tokens) throw new RpcError(grpc.Code.Internal, "server returned no tokens");
  const now = Date.now();
  return {
    username: user?.username ?? fallbackUser ?? "",
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
 * SessionManager holds the current session. Listeners hear about every
 * change: login, refreshed tokens (the live stream forwards the new access
 * token in band), logout. It is used from the browser's single thread only.
 */
export class SessionManager {
  private data: SessionData | null = null;
  private listeners = new Set<Listener>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private inflight: Promise<SessionData> | null = null;

  constructor(private readonly storage: Storage | undefined = globalThis.sessionStorage) {
    try {
      const raw = this.storage?.getItem(storageKey);
      if (raw) {
        const parsed = JSON.parse(raw) as SessionData;
        if (parsed.refreshExpiresAt > Date.now()) this.set(parsed);
        else this.storage?.removeItem(storageKey);
      }
    } catch {
      this.storage?.removeItem(storageKey);
    }
  }

  get current(): SessionData | null {
    return this.data;
  }

  subscribe(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  async register(username: string, password: string): Promise<SessionData> {
    const res = await unary(registerDef, { username, password });
    return this.set(fromTokens(res.user, res.tokens, username));
  }

  async login(username: string, password: string): Promise<SessionData> {
    const res = await unary(loginDef, { username, password });
    return this.set(fromTokens(res.user, res.tokens, username));
  }

  /** logout revokes the refresh token (best effort) and forgets the session. */
  async logout(): Promise<void> {
    const d = this.data;
    this.set(null);
    if (d) {
      try {
        await unary(logoutDef, { refreshToken: d.refreshToken });
      } catch {
        // The token expires on its own; nothing else to do.
      }
    }
  }

  /**
   * accessToken returns a usable access token, refreshing first when it
   * expires within 10 s (or when force is set, e.g. after Unauthenticated).
   */
  async accessToken(force = false): Promise<string> {
    const d = this.data;
    if (!d) throw new RpcError(grpc.Code.Unauthenticated, "not logged in");
    if (!force && d.accessExpiresAt - Date.now() > 10_000) return d.accessToken;
    return (await this.refresh()).accessToken;
  }

  /** refresh trades the refresh token for new tokens; calls share one flight. */
  refresh(): Promise<SessionData> {
    if (this.inflight) return this.inflight;
    const d = this.data;
    if (!d) return Promise.reject(new RpcError(grpc.Code.Unauthenticated, "not logged in"));
    this.inflight = unary(refreshDef, { refreshToken: d.refreshToken })
      .then((res) => this.set(fromTokens(res.user, res.tokens, d.username)))
      .catch((err: unknown) => {
        // A refused refresh token means the session is over; a network error
        // is retried by the next schedule.
        if (err instanceof RpcError && (err.code === grpc.Code.Unauthenticated || err.code === grpc.Code.PermissionDenied)) {
          this.set(null);
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
    try {
      if (d) this.storage?.setItem(storageKey, JSON.stringify(d));
      else this.storage?.removeItem(storageKey);
    } catch {
      // Storage full or disabled: memory is enough for this tab.
    }
    if (d) this.schedule(d);
    for (const fn of this.listeners) fn(d);
    return d as SessionData;
  }

  private schedule(d: SessionData, delay?: number): void {
    clearTimeout(this.timer);
    const wait = delay ?? refreshDelay(Date.now(), d.accessIssuedAt, d.accessExpiresAt);
    this.timer = setTimeout(() => {
      this.refresh().catch(() => {});
    }, wait);
  }
}

/** isStaff says whether a role may open the admin page. */
export function isStaff(role: Role): boolean {
  return role === Role.MODERATOR || role === Role.ADMIN;
}
