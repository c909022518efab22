// The web app's session: the shared SessionManager (clients/shared) with the
// Auth service over gRPC-Web, mirrored to sessionStorage so a reload in the
// same tab stays logged in. Used from the browser's single thread only.

import { grpc } from "@improbable-eng/grpc-web";
import { Auth } from "../../../shared/src/gen/chat/v1/auth_pb";
import {
  SessionManager as SharedSessionManager,
  type AuthBackend,
  type SessionData,
  type SessionStore,
} from "../../../shared/src/auth/session";
import { unaryDefinition } from "../rpc/adapter";
import { RpcError, unary } from "../rpc/client";

export { isStaff, type SessionData } from "../../../shared/src/auth/session";

const registerDef = unaryDefinition(Auth.method.register);
const loginDef = unaryDefinition(Auth.method.login);
const refreshDef = unaryDefinition(Auth.method.refresh);
const logoutDef = unaryDefinition(Auth.method.logout);

const storageKey = "parley.session";

/** grpcAuth is the Auth service over gRPC-Web. */
export const grpcAuth: AuthBackend = {
  register: (username, password) => unary(registerDef, { username, password }),
  login: (username, password) => unary(loginDef, { username, password }),
  refresh: (refreshToken) => unary(refreshDef, { refreshToken }),
  logout: (refreshToken) => unary(logoutDef, { refreshToken }),
  refused: (err) => err instanceof RpcError && (err.code === grpc.Code.Unauthenticated || err.code === grpc.Code.PermissionDenied),
  notLoggedIn: () => new RpcError(grpc.Code.Unauthenticated, "not logged in"),
  noTokens: () => new RpcError(grpc.Code.Internal, "server returned no tokens"),
};

/** storageStore keeps the session in a Storage (sessionStorage: this tab only). */
export function storageStore(storage: Storage | undefined): SessionStore {
  return {
    load: () => {
      const raw = storage?.getItem(storageKey);
      return raw ? (JSON.parse(raw) as SessionData) : null;
    },
    save: (d) => {
      if (d) storage?.setItem(storageKey, JSON.stringify(d));
      else storage?.removeItem(storageKey);
    },
  };
}

/** SessionManager is the shared one over gRPC-Web, kept in sessionStorage. */
export class SessionManager extends SharedSessionManager {
  constructor(storage: Storage | undefined = globalThis.sessionStorage) {
    super(grpcAuth, storageStore(storage));
  }
}
