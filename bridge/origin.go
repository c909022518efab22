package bridge

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
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
