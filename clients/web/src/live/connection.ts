// The web app's live stream: the shared LiveConnection (clients/shared,
// which owns reconnects, resume, re-sends, in-band token refresh and the
// reconnect rule) over gRPC-Web, Chat.Connect on improbable's websocket
// transport with `authorization: Bearer` in the header frame (never in the
// URL). This file is only the transport adapter.
//
// It runs on the browser's single thread; callbacks are invoked
// synchronously from transport events.

import { grpc } from "@improbable-eng/grpc-web";
import { Chat, ClientEventSchema, ServerEventSchema } from "../../../shared/src/gen/chat/v1/chat_pb";
import {
  LiveConnection as SharedConnection,
  type LiveOptions as SharedOptions,
  type Transport,
} from "../../../shared/src/live/connection";
import { DisconnectCode, codeForStatus } from "../../../shared/src/live/disconnect";
import { methodDefinition, wire, type Wire } from "../rpc/adapter";
import { apiHost, codeName } from "../rpc/client";

export { newRequestId } from "../../../shared/src/live/connection";
export type { ClientEventInit, CursorInit, Phase, StatusUpdate } from "../../../shared/src/live/connection";

const connectDef = methodDefinition(Chat.method.connect);

export interface GrpcWebOptions {
  /** host overrides the bridge origin (default: the page's origin). */
  host?: string;
  /** transport overrides improbable's WebSocket transport (tests only). */
  transport?: grpc.TransportFactory;
}

/** grpcWebTransport is the Transport over gRPC-Web (improbable's client). */
export function grpcWebTransport(opts: GrpcWebOptions = {}): Transport {
  return (accessToken, h) => {
    const client = grpc.client<Wire<typeof ClientEventSchema>, Wire<typeof ServerEventSchema>, typeof connectDef>(connectDef, {
      host: opts.host ?? apiHost(),
      transport: opts.transport ?? grpc.WebsocketTransport(),
    });
    let done = false;
    client.onMessage((msg) => {
      if (!done) h.onEvent(msg.message);
    });
    client.onEnd((code, message) => {
      if (done) return;
      done = true;
      // A socket that closed with no status is a lost connection (1006).
      const lost = isLost(code, message);
      h.onEnd({ code: lost ? DisconnectCode.Abnormal : codeForStatus(code), reason: lost ? "" : message, detail: endDetail(code, message) });
    });
    const md = new grpc.Metadata();
    md.set("authorization", `Bearer ${accessToken}`);
    client.start(md);
    return {
      send(ev) {
        if (!done) client.send(wire(ClientEventSchema, ev));
      },
      close() {
        if (done) return;
        done = true;
        client.close();
      },
    };
  };
}

export type LiveOptions = Omit<SharedOptions, "transport"> & GrpcWebOptions;

/** LiveConnection is the shared connection over gRPC-Web. */
export class LiveConnection extends SharedConnection {
  constructor(opts: LiveOptions) {
    const { host, transport, ...rest } = opts;
    super({ ...rest, transport: grpcWebTransport({ host, transport }) });
  }
}

/**
 * endDetail says why a stream ended, for people. improbable reports a socket
 * that closed without a gRPC status as Unknown/Internal "Response closed
 * without ..."; that is a lost connection, whatever the wording.
 */
export function endDetail(code: grpc.Code, message: string): string {
  if (code === grpc.Code.OK) return "stream closed";
  if (isLost(code, message)) return "connection lost";
  return `${codeName(code)}${message ? `: ${message}` : ""}`;
}

function isLost(code: grpc.Code, message: string): boolean {
  return (code === grpc.Code.Unknown || code === grpc.Code.Internal) && message.startsWith("Response closed without");
}
