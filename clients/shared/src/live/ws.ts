// The /ws transport: one WebSocket is one Chat.Connect stream, in binary
// frames, each one protobuf message. The first frame is the hello `{}` (JSON
// bytes in a binary frame), which fixes the connection to binary; the access
// token travels in the Sec-WebSocket-Protocol header ("parley.v1,
// bearer.<JWT>"), never in the URL. The close code is the Disconnect
// table's code, handed to the connection as it came.
//
// Only the standard WebSocket API is used (React Native's, a browser's, or
// the `ws` package in tests); callbacks run on the JS thread.

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ClientEventSchema, ServerEventSchema } from "../gen/chat/v1/chat_pb";
import type { ServerEvent } from "../gen/chat/v1/chat_pb";
import type { Stream, StreamHandlers, Transport } from "./connection";
import { DisconnectCode, closeDetail } from "./disconnect";

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

/** WebSocketLike is the part of the WebSocket API the transport uses. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: ArrayBuffer): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

/** WebSocketFactory opens a socket. */
export type WebSocketFactory = (url: string, protocols: string[]) => WebSocketLike;

/** globalWebSocket uses the runtime's WebSocket (React Native's, a browser's, or one a test installed). */
export const globalWebSocket: WebSocketFactory = (url, protocols) => {
  const Ctor = (globalThis as unknown as { WebSocket: new (u: string, p: string[]) => WebSocketLike }).WebSocket;
  return new Ctor(url, protocols);
};

const OPEN = 1;

export interface WsTransportOptions {
  /** url is the /ws endpoint (ws:// or wss://). */
  url: string;
  /** webSocket opens the socket; default globalWebSocket. */
  webSocket?: WebSocketFactory;
}

/** wsTransport is the Transport over /ws binary frames. */
export function wsTransport(opts: WsTransportOptions): Transport {
  return (accessToken: string, h: StreamHandlers): Stream => {
    const ws = (opts.webSocket ?? globalWebSocket)(opts.url, protocolsFor(accessToken));
    let done = false;
    const detach = () => {
      done = true;
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    };
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      try {
        ws.send(helloFrame());
      } catch {
        // onclose follows.
      }
    };
    ws.onmessage = (e) => {
      if (done) return;
      let ev: ServerEvent | null;
      try {
        ev = decodeServerEvent(e.data);
      } catch {
        return; // a frame we cannot decode: skip it, the stream goes on
      }
      if (ev) h.onEvent(ev);
    };
    ws.onerror = () => {
      // onclose always follows with the code.
    };
    ws.onclose = (e) => {
      if (done) return;
      detach();
      const code = e?.code ?? DisconnectCode.Abnormal;
      const reason = e?.reason ?? "";
      h.onEnd({ code, reason, detail: closeDetail(code, reason) });
    };
    return {
      send(ev) {
        // Not open (yet, or any more): the close handler reconnects and re-sends.
        if (done || ws.readyState !== OPEN) return;
        ws.send(encodeClientEvent(ev));
      },
      close() {
        if (done) return;
        detach();
        try {
          ws.close(1000, "client closed");
        } catch {
          // Already closed.
        }
      },
    };
  };
}
