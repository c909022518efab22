// Package auth owns who a caller is: roles, the Principal that travels in a
// call's context, access tokens (JWT issue and verify), password hashes and
// opaque refresh tokens.
//
// Concurrency: every exported type and function is safe for concurrent use.
// An *Issuer and a *Verifier are immutable after construction. A *Principal's
// Username, Role and SessionIP are set once before it is put in a context and
// never change; only its expiry moves (through SetExpiresAt, atomically),
// because an in-band token refresh on a stream's reader updates it while the
// stream's writer reads it.
//
// This package does no I/O and starts no goroutines. It knows nothing of
// gRPC metadata; the interceptor package reads the header and maps the
// sentinel errors here to status codes.
package auth
