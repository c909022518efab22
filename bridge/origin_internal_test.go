package bridge

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestRefusalLogLimitsItself: one line per origin per minute, the next
// one counting what was not logged, and a bounded memory of origins.
func TestRefusalLogLimitsItself(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := newRefusalLog(slog.New(slog.NewTextHandler(&buf, nil)))
	now := time.Unix(1_700_000_000, 0)
	l.now = func() time.Time { return now }
	r := httptest.NewRequest("GET", "/api/rooms", nil)
	for range 5 {
		l.refused(r, "rest", "http://a.example")
	}
	l.refused(r, "rest", "http://b.example")
	if n := strings.Count(buf.String(), "\n"); n != 2 {
		t.Fatalf("%d lines for 6 refusals of 2 origins, want 2:\n%s", n, buf.String())
	}
	now = now.Add(59 * time.Second)
	l.refused(r, "rest", "http://a.example")
	if n := strings.Count(buf.String(), "\n"); n != 2 {
		t.Fatalf("a line within the minute:\n%s", buf.String())
	}
	now = now.Add(2 * time.Second)
	buf.Reset()
	l.refused(r, "rest", "http://a.example")
	if !strings.Contains(buf.String(), "origin=http://a.example") || !strings.Contains(buf.String(), "suppressed_since_last=5") {
		t.Fatalf("after the minute: %q, want the origin and 5 suppressed", buf.String())
	}

	for i := range 3 * maxRefusalOrigins {
		l.refused(r, "rest", fmt.Sprintf("http://h%d.example", i))
	}
	l.mu.Lock()
	n := len(l.origins)
	l.mu.Unlock()
	if n > maxRefusalOrigins+1 {
		t.Fatalf("%d origins remembered, want at most %d", n, maxRefusalOrigins+1)
	}
}
