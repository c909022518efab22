// The /ws wire format this app uses: binary frames, each one protobuf
// message. The first frame is the hello `{}` (JSON bytes in a binary frame),
// which fixes the connection to binary; the token travels in the
// Sec-WebSocket-Protocol header, never in the URL.

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ClientEventSchema, ServerEventSchema } from "../../../shared/src/gen/chat/v1/chat_pb";
import type { ServerEvent } from "../../../shared/src/gen/chat/v1/chat_pb";

/** SUBPROTOCOL is the one the bridge echoes. */
export const SUBPROTOCOL = "parley.v1";

/** protocolsFor is the subprotocol list that carries an access token. */
export function protocolsFor(accessToken: string): string[] {
  return [SUBPROTOCOL, `bearer.${accessToken}`];
}

/** exactBuffer returns an ArrayBuffer holding exactly the view's bytes. */
export function exactBuffer(b: Uint8Array): ArrayBuffer {
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength) return b.buffer as ArrayBuffer;
  return b.slice().buffer as ArrayBuffer;
}

/** helloFrame is the first frame: `{}` as bytes, so the server answers in binary. */
export function helloFrame(): ArrayBuffer {
  return exactBuffer(new Uint8Array([0x7b, 0x7d]));
}

/** encodeClientEvent encodes one ClientEvent as a binary frame. */
export function encodeClientEvent(ev: MessageInitShape<typeof ClientEventSchema>): ArrayBuffer {
  return exactBuffer(toBinary(ClientEventSchema, create(ClientEventSchema, ev)));
}

/**
 * decodeServerEvent decodes one binary frame. Frames may arrive as an
 * ArrayBuffer (binaryType "arraybuffer"), a typed array, or, from some
 * WebSocket implementations, an ArrayBuffer of another realm: duck typing,
 * not instanceof. A text frame (never sent on a binary connection) is null.
 */
export function decodeServerEvent(data: unknown): ServerEvent | null {
  if (typeof data === "string" || data == null) return null;
  let bytes: Uint8Array;
  if (ArrayBuffer.isView(data)) {
    const v = data as ArrayBufferView;
    bytes = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  } else if (typeof (data as ArrayBuffer).byteLength === "number") {
    bytes = new Uint8Array(data as ArrayBuffer);
  } else {
    return null;
  }
  return fromBinary(ServerEventSchema, bytes);
}

/** CloseAction says what a client does after the socket closed with a code. */
export type CloseAction =
  | { kind: "stop"; reason: string }
  | { kind: "auth" }
  | { kind: "retry"; minDelayMs: number };

/**
 * closeAction follows the bridge's close-code table: 1000 and 4403 end the
 * session, 4401 means refresh the token and reconnect, 4429 waits longer,
 * everything else (1001, 1006, 1008, 1012, 4408, 4500, ...) reconnects with
 * backoff and then resumes.
 */
export function closeAction(code: number, reason: string): CloseAction {
  switch (code) {
    case 1000:
      return { kind: "stop", reason: reason || "the server ended the session" };
    case 4403:
      return { kind: "stop", reason: reason || "permission denied" };
    case 4401:
      return { kind: "auth" };
    case 4429:
      return { kind: "retry", minDelayMs: 5_000 };
    default:
      return { kind: "retry", minDelayMs: 0 };
  }
}

/** closeDetail says why a socket closed, for people. */
export function closeDetail(code: number, reason: string): string {
  const what: Record<number, string> = {
    1000: "closed",
    1001: "server going away",
    1006: "connection lost",
    1008: "too slow to keep up",
    1009: "message too large",
    1012: "server restarting",
    4400: "protocol error",
    4401: "not signed in",
    4403: "permission denied",
    4408: "no hello in time",
    4429: "rate limited",
    4500: "server error",
  };
  const base = what[code] ?? `closed (${code})`;
  return reason ? `${base}: ${reason}` : base;
}
