// Authenticated unary calls of the Chat and Admin services. Each call takes
// the current access token from the session and retries once with a fresh
// one when the server answers Unauthenticated.

import { grpc } from "@improbable-eng/grpc-web";
import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { Admin } from "../../../shared/src/gen/chat/v1/admin_pb";
import { Chat } from "../../../shared/src/gen/chat/v1/chat_pb";
import type { SessionManager } from "../auth/session";
import { unaryDefinition, type UnaryMethod } from "./adapter";
import { RpcError, unary } from "./client";

export const defs = {
  getHistory: unaryDefinition(Chat.method.getHistory),
  listOnlineUsers: unaryDefinition(Chat.method.listOnlineUsers),
  listRooms: unaryDefinition(Chat.method.listRooms),
  listConversations: unaryDefinition(Chat.method.listConversations),
  getStats: unaryDefinition(Admin.method.getStats),
  broadcast: unaryDefinition(Admin.method.broadcast),
  disconnectUser: unaryDefinition(Admin.method.disconnectUser),
  setUserActive: unaryDefinition(Admin.method.setUserActive),
  setUserRole: unaryDefinition(Admin.method.setUserRole),
};

/** Api makes authenticated unary calls; safe to share across components. */
export class Api {
  constructor(private readonly session: SessionManager) {}

  async call<I extends DescMessage, O extends DescMessage>(
    method: UnaryMethod<I, O>,
    input: MessageInitShape<I>,
  ): Promise<MessageShape<O>> {
    const token = await this.session.accessToken();
    try {
      return await unary(method, input, { token });
    } catch (err) {
      if (err instanceof RpcError && err.code === grpc.Code.Unauthenticated) {
        const fresh = await this.session.accessToken(true);
        return unary(method, input, { token: fresh });
      }
      throw err;
    }
  }
}
