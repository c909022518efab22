//go:build linux

package bridge

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestTCPUserTimeoutSet(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	c, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	setTCPUserTimeout(c, 50*time.Second)
	raw, _ := c.(*net.TCPConn).SyscallConn()
	var got int
	_ = raw.Control(func(fd uintptr) { got, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT) })
	if got != 50_000 {
		t.Fatalf("TCP_USER_TIMEOUT = %d ms, want 50000", got)
	}
}
