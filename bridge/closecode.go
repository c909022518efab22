package bridge

import (
	"unicode/utf8"

	"github.com/coder/websocket"
	"google.golang.org/grpc/status"

	"github.com/parleychat/parley/server/session"
)

// WebSocket close codes used on /ws: the codes of the one Disconnect
// table (session.Code, chat.proto's Disconnect), which also says whether a
// client reconnects. The close reason is the Disconnect's reason, cut to
// 123 bytes.
const (
	closeNormal          = websocket.StatusCode(session.CodeNormal)          // 1000
	closeGoingAway       = websocket.StatusCode(session.CodeGoingAway)       // 1001
	closeSlowConsumer    = websocket.StatusCode(session.CodeSlowConsumer)    // 1008
	closeServiceRestart  = websocket.StatusCode(session.CodeUnavailable)     // 1012
	closeBadRequest      = websocket.StatusCode(session.CodeBadRequest)      // 4400
	closeUnauthenticated = websocket.StatusCode(session.CodeUnauthenticated) // 4401
	closePermission      = websocket.StatusCode(session.CodePermission)      // 4403
	closeFirstFrame      = websocket.StatusCode(session.CodeFirstFrame)      // 4408
	closeRateLimited     = websocket.StatusCode(session.CodeLimited)         // 4429
	closeServerError     = websocket.StatusCode(session.CodeServerError)     // 4500
)

// CloseCode returns the /ws close code for a Connect stream that ended with
// st (nil means OK), from the Disconnect table. Safe for concurrent use.
func CloseCode(st *status.Status) websocket.StatusCode {
	return websocket.StatusCode(session.FromStatus(st.Err()).Code)
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
