// The mobile app's live stream: the shared LiveConnection (clients/shared,
// which owns reconnects, resume, re-sends, in-band token refresh and the
// reconnect rule) over /ws binary protobuf frames, the token in the
// Sec-WebSocket-Protocol header. The WebSocket implementation is injectable
// (React Native's global WebSocket by default; tests pass the `ws` package).

import { LiveConnection as SharedConnection, type LiveOptions as SharedOptions } from "../../../shared/src/live/connection";
import { wsTransport, type WsTransportOptions } from "../../../shared/src/live/ws";

export { newRequestId } from "../../../shared/src/live/connection";
export type { ClientEventInit, CursorInit, Phase, StatusUpdate } from "../../../shared/src/live/connection";
export { globalWebSocket, type WebSocketFactory, type WebSocketLike } from "../../../shared/src/live/ws";

export type LiveOptions = Omit<SharedOptions, "transport"> & WsTransportOptions;

/** LiveConnection is the shared connection over /ws. */
export class LiveConnection extends SharedConnection {
  constructor(opts: LiveOptions) {
    const { url, webSocket, ...rest } = opts;
    super({ ...rest, transport: wsTransport({ url, webSocket }) });
  }
}
