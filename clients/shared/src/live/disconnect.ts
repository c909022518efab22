// The one reconnect rule every client follows (proto/chat/v1/chat.proto,
// message Disconnect). A session the server ends sends a Disconnect event
// first; its reconnect flag and retry_after decide. When the stream ends
// with none (an older server, a lost connection), the code the stream ended
// with is looked up in the same table the comment in chat.proto gives. Both
// transports report that code: /ws its close code, gRPC-Web its status
// mapped by codeForStatus. Nothing else (notices, message text) decides.
//
// Pure functions and constants; safe to use from anywhere.

import { durationMs } from "@bufbuild/protobuf/wkt";
import type { Disconnect } from "../gen/chat/v1/chat_pb";

/** DisconnectCode names the codes of the table in chat.proto. */
export const DisconnectCode = {
  Normal: 1000,
  GoingAway: 1001,
  /** Abnormal is no code at all: the connection dropped without a close frame. */
  Abnormal: 1006,
  SlowConsumer: 1008,
  TooLarge: 1009,
  Unavailable: 1012,
  ProtocolError: 4400,
  Unauthenticated: 4401,
  PermissionDenied: 4403,
  NoFirstFrame: 4408,
  DisconnectedByStaff: 4409,
  RateLimited: 4429,
  ServerError: 4500,
} as const;

interface Row {
  /** meaning says why, for people. */
  meaning: string;
  reconnect: boolean;
}

/**
 * TABLE is chat.proto's table. A code missing from it (1006, 1005, a code
 * from a proxy) is a connection that dropped with no Disconnect: reconnect.
 */
export const TABLE: Readonly<Record<number, Row>> = {
  1000: { meaning: "closed", reconnect: false },
  1001: { meaning: "server going away", reconnect: true },
  1006: { meaning: "connection lost", reconnect: true },
  1008: { meaning: "too slow to keep up", reconnect: true },
  1009: { meaning: "message too large", reconnect: false },
  1012: { meaning: "server restarting", reconnect: true },
  4400: { meaning: "protocol error", reconnect: false },
  4401: { meaning: "not signed in", reconnect: true },
  4403: { meaning: "permission denied", reconnect: false },
  4408: { meaning: "no hello in time", reconnect: true },
  4409: { meaning: "disconnected by a moderator or admin", reconnect: false },
  4429: { meaning: "rate limited", reconnect: true },
  4500: { meaning: "server error", reconnect: true },
};

/**
 * RATE_LIMITED_WAIT_MS is the least wait after 4429 when no Disconnect said
 * how long (its retry_after is the server's word when one came).
 */
export const RATE_LIMITED_WAIT_MS = 5_000;

/**
 * codeForStatus maps the gRPC status a Connect stream ended with onto the
 * table, as the bridge maps it onto /ws close codes: OK 1000,
 * Unauthenticated 4401, PermissionDenied 4403, ResourceExhausted 4429,
 * Unavailable 1012, Aborted (how the server ends a session an admin
 * disconnected) 4409, anything else 4500.
 */
export function codeForStatus(grpcCode: number): number {
  switch (grpcCode) {
    case 0:
      return DisconnectCode.Normal;
    case 16:
      return DisconnectCode.Unauthenticated;
    case 7:
      return DisconnectCode.PermissionDenied;
    case 8:
      return DisconnectCode.RateLimited;
    case 14:
      return DisconnectCode.Unavailable;
    case 10:
      return DisconnectCode.DisconnectedByStaff;
  }
  return DisconnectCode.ServerError;
}

/** Decision is what a client does after its stream ended. */
export interface Decision {
  /** code is the table's code the decision came from. */
  code: number;
  /** reason is the server's text, if any. */
  reason: string;
  reconnect: boolean;
  /** newToken: get a fresh access token before reconnecting (4401). */
  newToken: boolean;
  /** minDelayMs is the least wait before reconnecting; backoff may wait longer. */
  minDelayMs: number;
  /** authLost: the server refused this user (4403); the app signs out. */
  authLost: boolean;
  /** fromEvent says whether a Disconnect event decided (else the table). */
  fromEvent: boolean;
}

/**
 * decide applies the rule: the Disconnect event when one arrived, else the
 * table row of the code the stream ended with.
 */
export function decide(ev: Disconnect | undefined, endCode: number, endReason = ""): Decision {
  if (ev) {
    return {
      code: ev.code,
      reason: ev.reason,
      reconnect: ev.reconnect,
      newToken: ev.reconnect && ev.code === DisconnectCode.Unauthenticated,
      minDelayMs: ev.retryAfter ? Math.max(0, durationMs(ev.retryAfter)) : 0,
      authLost: !ev.reconnect && ev.code === DisconnectCode.PermissionDenied,
      fromEvent: true,
    };
  }
  const reconnect = TABLE[endCode]?.reconnect ?? true;
  return {
    code: endCode,
    reason: endReason,
    reconnect,
    newToken: endCode === DisconnectCode.Unauthenticated,
    minDelayMs: endCode === DisconnectCode.RateLimited ? RATE_LIMITED_WAIT_MS : 0,
    authLost: endCode === DisconnectCode.PermissionDenied,
    fromEvent: false,
  };
}

/** closeDetail says why a stream closed with a table code, for people. */
export function closeDetail(code: number, reason: string): string {
  const base = TABLE[code]?.meaning ?? `closed (${code})`;
  return reason ? `${base}: ${reason}` : base;
}
