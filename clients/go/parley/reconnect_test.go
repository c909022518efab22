package parley

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// TestReconnectRule: the server's Disconnect event decides, whatever the
// status says; without one the status decides by the same table, and a
// dropped connection reconnects.
func TestReconnectRule(t *testing.T) {
	for _, tc := range []struct {
		name  string
		d     *chatv1.Disconnect
		err   error
		wait  time.Duration
		final bool
	}{
		{"event says stay", &chatv1.Disconnect{Code: 4409, Reconnect: false}, status.Error(codes.Unavailable, "x"), 0, true},
		{"event says return later", &chatv1.Disconnect{Code: 1012, Reconnect: true, RetryAfter: durationpb.New(3 * time.Second)}, status.Error(codes.Aborted, "x"), 3 * time.Second, false},
		{"event, no status", &chatv1.Disconnect{Code: 1000}, nil, 0, true},
		{"admin status, no event", nil, status.Error(codes.Aborted, "x"), 0, true},
		{"permission status, no event", nil, status.Error(codes.PermissionDenied, "x"), 0, true},
		{"shutdown status, no event", nil, status.Error(codes.Unavailable, "x"), 0, false},
		{"expired token, no event", nil, status.Error(codes.Unauthenticated, "x"), 0, false},
		{"connection dropped", nil, errors.New("transport is closing"), 0, false},
	} {
		wait, final := reconnectRule(tc.d, tc.err)
		if wait != tc.wait || final != tc.final {
			t.Errorf("%s: wait %s final %v, want %s %v", tc.name, wait, final, tc.wait, tc.final)
		}
	}
}
