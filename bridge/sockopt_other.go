//go:build !linux

package bridge

import (
	"net"
	"time"
)

// setTCPUserTimeout is Linux-only; elsewhere TCP keep-alives and the
// WebSocket pings have to do.
func setTCPUserTimeout(net.Conn, time.Duration) {}
