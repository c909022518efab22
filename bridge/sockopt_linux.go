//go:build linux

package bridge

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// setTCPUserTimeout makes the kernel fail c when data it sent (a ping
// included) stays unacknowledged for d, so a vanished peer ends the stream
// even while the WebSocket layer is blocked waiting for it. Best effort.
func setTCPUserTimeout(c net.Conn, d time.Duration) {
	sc, ok := c.(syscall.Conn)
	if !ok || d <= 0 {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
	})
}
