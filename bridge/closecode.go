package bridge

import (
	"unicode/utf8"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// WebSocket close codes used on /ws. The code tells a client what to do:
//
//	code  meaning                                        client should
//	1000  Connect ended with OK                          not reconnect
//	1001  bridge shutting down, or peer unresponsive     reconnect with backoff, then Resume
//	1008  slow consumer: its send queue was full         reconnect with backoff, then Resume
//	1009  frame larger than MaxFrameBytes                fix the client; do not resend it
//	1012  Unavailable (server restarting or overloaded)  reconnect with backoff, then Resume
//	4400  protocol error before the stream (bad first    fix the client
//	      frame, token given twice, token not ASCII)
//	4401  Unauthenticated (missing, bad, expired token)  refresh or log in again, then reconnect
//	4403  PermissionDenied                               not reconnect
//	4408  no first frame within 10s                      reconnect, sending the first frame at once
//	4429  ResourceExhausted (rate or connection limit)   reconnect after a longer backoff
//	4500  any other final status (Internal, ...)         reconnect with backoff
//
// The close reason is the gRPC status message, cut to 123 bytes.
const (
	closeNormal          = websocket.StatusNormalClosure   // 1000
	closeGoingAway       = websocket.StatusGoingAway       // 1001
	closeSlowConsumer    = websocket.StatusPolicyViolation // 1008
	closeServiceRestart  = websocket.StatusServiceRestart  // 1012
	closeBadRequest      = websocket.StatusCode(4400)
	closeUnauthenticated = websocket.StatusCode(4401)
	closePermission      = websocket.StatusCode(4403)
	closeFirstFrame      = websocket.StatusCode(4408)
	closeRateLimited     = websocket.StatusCode(4429)
	closeServerError     = websocket.StatusCode(4500)
)

// CloseCode returns the /ws close code for a Connect stream that ended with
// st (nil means OK). Safe for concurrent use.
func CloseCode(st *status.Status) websocket.StatusCode {
	switch st.Code() {
	case codes.OK:
		return closeNormal
	case codes.Unauthenticated:
		return closeUnauthenticated
	case codes.PermissionDenied:
		return closePermission
	case codes.ResourceExhausted:
		return closeRateLimited
	case codes.Unavailable:
		return closeServiceRestart
	}
	return closeServerError
}

// closeReason cuts s to the 123 bytes a close frame can carry, on a rune
// boundary.
func closeReason(s string) string {
	const max = 123
	if len(s) <= max {
		return s
	}
	s = s[:max]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
