// The mobile app's session: the shared SessionManager (clients/shared) with
// the Auth service over REST, tokens in memory only (nothing is written to
// device storage).

import { SessionManager as SharedSessionManager, type AuthBackend } from "../../../shared/src/auth/session";
import { ApiError, type RestClient } from "../api/rest";

export { isStaff, type SessionData } from "../../../shared/src/auth/session";

/** restAuth is the Auth service over the bridge's REST API. */
export function restAuth(rest: RestClient): AuthBackend {
  return {
    register: (username, password) => rest.register(username, password),
    login: (username, password) => rest.login(username, password),
    refresh: (refreshToken) => rest.refresh(refreshToken),
    logout: (refreshToken) => rest.logout(refreshToken),
    refused: (err) => err instanceof ApiError && (err.status === 401 || err.status === 403),
    notLoggedIn: () => new ApiError(401, "UNAUTHENTICATED", "not logged in"),
    noTokens: () => new ApiError(500, "INTERNAL", "server returned no tokens"),
  };
}

/** SessionManager is the shared one over REST, for one server. */
export class SessionManager extends SharedSessionManager {
  constructor(readonly rest: RestClient) {
    super(restAuth(rest));
  }
}
