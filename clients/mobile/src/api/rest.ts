// REST calls to the bridge's /api: auth (register, login, refresh, logout)
// and the authenticated reads the app needs (history, online users, rooms,
// files). Bodies are protojson of the chat.v1 messages, so the generated
// schemas encode and decode them. Tokens go only in the Authorization header,
// never in a URL.

import { create, fromJson, toJson } from "@bufbuild/protobuf";
import type { DescMessage, JsonValue, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import {
  LoginRequestSchema,
  LoginResponseSchema,
  LogoutRequestSchema,
  LogoutResponseSchema,
  RefreshRequestSchema,
  RefreshResponseSchema,
  RegisterRequestSchema,
  RegisterResponseSchema,
} from "../../../shared/src/gen/chat/v1/auth_pb";
import {
  GetHistoryResponseSchema,
  ListConversationsResponseSchema,
  ListOnlineUsersResponseSchema,
  ListRoomsResponseSchema,
  UploadFileResponseSchema,
} from "../../../shared/src/gen/chat/v1/chat_pb";
import type { ConvKey, FileInfo } from "../../../shared/src/chat/model";
import { parseKey } from "../../../shared/src/chat/model";

/** FetchLike is the subset of fetch the client uses (injectable for tests). */
export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/** ApiError is a refused or failed call: HTTP status, gRPC-style code, message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message || code || `HTTP ${status}`);
    this.name = "ApiError";
  }
  /** unauthenticated is true for 401 (bad or expired token, wrong password). */
  get unauthenticated(): boolean {
    return this.status === 401;
  }
}

/**
 * normalizeServerUrl turns what a person typed into a base URL:
 * "localhost:8080" becomes "http://localhost:8080", trailing slashes go.
 */
export function normalizeServerUrl(raw: string): string {
  let s = raw.trim();
  if (!s) throw new ApiError(0, "INVALID_ARGUMENT", "enter the server URL");
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(s)) s = `http://${s}`;
  if (!/^https?:\/\//i.test(s)) throw new ApiError(0, "INVALID_ARGUMENT", "the server URL must start with http:// or https://");
  return s.replace(/\/+$/, "");
}

/** wsUrl is the /ws endpoint of a base URL (http→ws, https→wss). */
export function wsUrl(base: string): string {
  return `${base.replace(/^http/i, "ws")}/ws`;
}

const networkError = (err: unknown) =>
  new ApiError(0, "UNAVAILABLE", `cannot reach the server: ${(err as Error)?.message ?? String(err)}`);

/**
 * errorOf reads the server's explanation: the REST API's JSON
 * {"code","message"}, or a plain-text body (a refusal made before the API,
 * such as a foreign origin), so the person sees the server's words.
 */
export async function errorOf(res: Response): Promise<ApiError> {
  let code = "";
  let message = "";
  let text = "";
  try {
    text = (await res.text()).trim();
  } catch {
    // No body: the status says enough.
  }
  try {
    const body = JSON.parse(text) as { code?: string; message?: string };
    code = body.code ?? "";
    message = body.message ?? "";
  } catch {
    const html = /^</.test(text) || /html/i.test(res.headers?.get?.("Content-Type") ?? "");
    if (!html) message = text.replace(/\s+/g, " ").slice(0, 300);
  }
  return new ApiError(res.status, code, message || `HTTP ${res.status}`);
}

/** RestClient talks to one server's /api. */
export class RestClient {
  readonly baseUrl: string;
  private readonly fetchImpl: FetchLike;

  constructor(baseUrl: string, fetchImpl?: FetchLike) {
    this.baseUrl = normalizeServerUrl(baseUrl);
    this.fetchImpl = fetchImpl ?? ((input, init) => fetch(input, init));
  }

  private async request(path: string, init: RequestInit): Promise<Response> {
    let res: Response;
    try {
      res = await this.fetchImpl(this.baseUrl + path, init);
    } catch (err) {
      throw networkError(err);
    }
    if (!res.ok) throw await errorOf(res);
    return res;
  }

  private async postAuth<I extends DescMessage, O extends DescMessage>(
    op: string,
    inSchema: I,
    outSchema: O,
    input: MessageInitShape<I>,
  ): Promise<MessageShape<O>> {
    const res = await this.request(`/api/auth/${op}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(toJson(inSchema, create(inSchema, input))),
    });
    return fromJson(outSchema, (await res.json()) as JsonValue, { ignoreUnknownFields: true });
  }

  register(username: string, password: string) {
    return this.postAuth("register", RegisterRequestSchema, RegisterResponseSchema, { username, password });
  }

  login(username: string, password: string) {
    return this.postAuth("login", LoginRequestSchema, LoginResponseSchema, { username, password });
  }

  refresh(refreshToken: string) {
    return this.postAuth("refresh", RefreshRequestSchema, RefreshResponseSchema, { refreshToken });
  }

  logout(refreshToken: string) {
    return this.postAuth("logout", LogoutRequestSchema, LogoutResponseSchema, { refreshToken });
  }

  /** get makes an authenticated GET and decodes the protojson answer. */
  async get<O extends DescMessage>(path: string, token: string, outSchema: O): Promise<MessageShape<O>> {
    const res = await this.request(path, { method: "GET", headers: { Authorization: `Bearer ${token}`, Accept: "application/json" } });
    return fromJson(outSchema, (await res.json()) as JsonValue, { ignoreUnknownFields: true });
  }

  /** download fetches a file's bytes (GET /api/files/{id}). */
  async download(fileId: string, token: string): Promise<Uint8Array> {
    const res = await this.request(`/api/files/${encodeURIComponent(fileId)}`, {
      method: "GET",
      headers: { Authorization: `Bearer ${token}` },
    });
    return new Uint8Array(await res.arrayBuffer());
  }

  /** upload posts raw bytes as a file (POST /api/files) and returns its FileRef. */
  async upload(bytes: Uint8Array, name: string, contentType: string, token: string): Promise<FileInfo> {
    const res = await this.request("/api/files", {
      method: "POST",
      headers: {
        Authorization: `Bearer ${token}`,
        "Content-Type": contentType || "application/octet-stream",
        "X-File-Name": encodeURIComponent(name),
        "X-File-Size": String(bytes.byteLength),
      },
      body: bytes as unknown as RequestInit["body"],
    });
    const out = fromJson(UploadFileResponseSchema, (await res.json()) as JsonValue, { ignoreUnknownFields: true });
    const f = out.file;
    if (!f) throw new ApiError(500, "INTERNAL", "upload answered without a file");
    return { id: f.id, name: f.name, size: Number(f.size), contentType: f.contentType };
  }
}

/** historyPath is the /api/messages query for a conversation's latest page. */
export function historyPath(key: ConvKey, limit = 100): string {
  const { kind, name } = parseKey(key);
  const who = kind === "room" ? `room=${encodeURIComponent(name)}` : `user=${encodeURIComponent(name)}`;
  return `/api/messages?${who}&limit=${limit}`;
}

/** historyAfterPath is the /api/messages query for a page of a conversation after a seq (oldest first). */
export function historyAfterPath(key: ConvKey, afterSeq: number, limit: number): string {
  const { kind, name } = parseKey(key);
  const who = kind === "room" ? `room=${encodeURIComponent(name)}` : `user=${encodeURIComponent(name)}`;
  return `/api/messages?${who}&after_seq=${afterSeq}&limit=${limit}`;
}

/** TokenSource gives an access token; force asks for a fresh one. */
export type TokenSource = (force: boolean) => Promise<string>;

/**
 * Api makes authenticated reads with the session's token, retrying once with
 * a fresh token when the server answers 401.
 */
export class Api {
  constructor(
    readonly rest: RestClient,
    private readonly token: TokenSource,
  ) {}

  private async withToken<T>(fn: (token: string) => Promise<T>): Promise<T> {
    try {
      return await fn(await this.token(false));
    } catch (err) {
      if (err instanceof ApiError && err.unauthenticated) return fn(await this.token(true));
      throw err;
    }
  }

  history(key: ConvKey, limit = 100) {
    return this.withToken((t) => this.rest.get(historyPath(key, limit), t, GetHistoryResponseSchema));
  }

  /** historyAfter fetches up to limit messages with seq > afterSeq (the gap fill). */
  historyAfter(key: ConvKey, afterSeq: number, limit: number) {
    return this.withToken((t) => this.rest.get(historyAfterPath(key, afterSeq, limit), t, GetHistoryResponseSchema));
  }

  onlineUsers(pageSize = 100, pageToken = "") {
    const q = `page_size=${pageSize}${pageToken ? `&page_token=${encodeURIComponent(pageToken)}` : ""}`;
    return this.withToken((t) => this.rest.get(`/api/users/online?${q}`, t, ListOnlineUsersResponseSchema));
  }

  /** conversations fetches one page of the caller's conversations (GET /api/conversations). */
  conversations(pageSize: number, pageToken = "") {
    const q = `page_size=${pageSize}${pageToken ? `&page_token=${encodeURIComponent(pageToken)}` : ""}`;
    return this.withToken((t) => this.rest.get(`/api/conversations?${q}`, t, ListConversationsResponseSchema));
  }

  rooms() {
    return this.withToken((t) => this.rest.get("/api/rooms", t, ListRoomsResponseSchema));
  }

  download(fileId: string) {
    return this.withToken((t) => this.rest.download(fileId, t));
  }

  upload(bytes: Uint8Array, name: string, contentType: string) {
    return this.withToken((t) => this.rest.upload(bytes, name, contentType, t));
  }
}
