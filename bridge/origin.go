package bridge

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// originList is the exact set of browser origins allowed to call the
// bridge. It is read-only after New.
type originList map[string]struct{}

func newOriginList(origins []string) (originList, error) {
	l := make(originList, len(origins))
	for _, o := range origins {
		n, ok := normalizeOrigin(o)
		if !ok {
			return nil, fmt.Errorf("bridge: AllowedOrigins entry %q is not an exact origin like \"https://chat.example.com\" (no wildcard, path or trailing slash)", o)
		}
		l[n] = struct{}{}
	}
	return l, nil
}

// normalizeOrigin returns "scheme://host[:port]" in lower case without a
// default port, or false when o is not a serialized http(s) origin.
func normalizeOrigin(o string) (string, bool) {
	if o == "" || strings.ContainsAny(o, "*? \t") {
		return "", false
	}
	u, err := url.Parse(o)
	if err != nil || u.Hostname() == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", false
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", false
	}
	host := strings.ToLower(u.Host)
	if h, port, err := net.SplitHostPort(host); err == nil {
		if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
			host = h
			if strings.Contains(h, ":") {
				host = "[" + h + "]"
			}
		}
	}
	return scheme + "://" + host, true
}

// allows reports whether a browser at origin may call the bridge.
func (l originList) allows(origin string) bool {
	n, ok := normalizeOrigin(origin)
	if !ok {
		return false
	}
	_, ok = l[n]
	return ok
}

// allowsRequest reports whether r may proceed: requests without an Origin
// header come from non-browser clients and are allowed; the others must
// carry a listed origin.
func (l originList) allowsRequest(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return len(r.Header.Values("Origin")) == 0
	}
	return l.allows(origin)
}

// originOf is the request's Origin as sent, for messages: "" when absent,
// and the values joined when a client sent several.
func originOf(r *http.Request) string {
	return strings.Join(r.Header.Values("Origin"), ", ")
}

// maxEchoedOrigin bounds how much of a refused Origin header is repeated
// in answers and logs.
const maxEchoedOrigin = 200

// originRefusal is the text every browser transport answers a refused
// origin with: which origin, and the flag that admits it (in the
// normalized form the flag takes), so that the person who opened the app
// through another hostname sees what to do.
func originRefusal(origin string) string {
	if len(origin) > maxEchoedOrigin {
		origin = origin[:maxEchoedOrigin] + "..."
	}
	if n, ok := normalizeOrigin(origin); ok {
		return fmt.Sprintf("origin %q is not allowed; start parleyd with --allowed-origins %s", origin, n)
	}
	return fmt.Sprintf("origin %q is not allowed: it is not a serialized http(s) origin, so no --allowed-origins entry can admit it", origin)
}

// refusalLog writes one warning per refused origin per interval, with the
// number of refusals it did not log since the last line. It remembers at
// most maxOrigins origins; beyond that, refusals of unremembered origins
// share one entry, so a client inventing origins cannot grow it.
// Safe for concurrent use.
type refusalLog struct {
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time

	mu      sync.Mutex
	origins map[string]*refusalEntry
}

type refusalEntry struct {
	last       time.Time
	suppressed int
}

const (
	refusalLogInterval = time.Minute
	maxRefusalOrigins  = 1024
	otherOrigins       = "(other origins)"
)

func newRefusalLog(log *slog.Logger) *refusalLog {
	return &refusalLog{log: log, interval: refusalLogInterval, now: time.Now, origins: make(map[string]*refusalEntry)}
}

// refused records a refusal of origin on transport and logs it unless one
// was logged less than an interval ago.
func (l *refusalLog) refused(r *http.Request, transport, origin string) {
	if len(origin) > maxEchoedOrigin {
		origin = origin[:maxEchoedOrigin] + "..."
	}
	now := l.now()
	l.mu.Lock()
	key := origin
	e := l.origins[key]
	if e == nil {
		if len(l.origins) >= maxRefusalOrigins {
			for k, old := range l.origins {
				if now.Sub(old.last) >= l.interval { // an unreported count of a stale entry is dropped
					delete(l.origins, k)
				}
			}
		}
		if len(l.origins) >= maxRefusalOrigins {
			key = otherOrigins
			e = l.origins[key]
		}
		if e == nil {
			e = &refusalEntry{}
			l.origins[key] = e
		}
	}
	if !e.last.IsZero() && now.Sub(e.last) < l.interval {
		e.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := e.suppressed
	e.last, e.suppressed = now, 0
	l.mu.Unlock()
	l.log.Warn("browser origin refused; start parleyd with --allowed-origins listing it to admit it",
		"origin", origin, "transport", transport, "path", r.URL.Path, "remote", remoteIP(r),
		"suppressed_since_last", suppressed)
}

// grpcWebRefusal answers a gRPC-Web request from a refused origin as a
// gRPC status in the headers (PermissionDenied and the message), which
// gRPC-Web clients show as the call's error, with the message as the body
// for anyone reading it by hand.
func grpcWebRefusal(w http.ResponseWriter, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Grpc-Status", "7") // PERMISSION_DENIED
	h.Set("Grpc-Message", encodeGRPCMessage(msg))
	w.WriteHeader(http.StatusForbidden)
	_, _ = fmt.Fprintln(w, msg)
}

// encodeGRPCMessage percent-encodes msg as the gRPC protocol requires of
// grpc-message: every byte outside printable ASCII, and '%'.
func encodeGRPCMessage(msg string) string {
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= ' ' && c <= '~' && c != '%' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
