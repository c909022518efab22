package bridge

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// staticHandler serves the web app with a single-page-app fallback.
type staticHandler struct{ fsys fs.FS }

// setPageHeaders sets the security headers of every page and asset.
func setPageHeaders(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	connect := "'self'"
	if host := r.Host; host != "" && validHost(host) {
		// 'self' covers ws: and wss: only in CSP Level 3 browsers.
		connect += " ws://" + host + " wss://" + host
	}
	h.Set("Content-Security-Policy", "default-src 'self'; connect-src "+connect+
		"; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; font-src 'self' data:"+
		"; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(".-:[]", c) >= 0) {
			return false
		}
	}
	return true
}

// serveStatic serves Static at "/". A path naming no file gets index.html
// (client-side routes), except paths that look like assets (with an
// extension other than .html), which get 404. Files under assets/ are
// content-hashed by the build and cached for a year; everything else is
// revalidated on each load.
func (b *Bridge) serveStatic(w http.ResponseWriter, r *http.Request) {
	setPageHeaders(w, r)
	if b.static == nil {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	if name == "" {
		name = "index.html"
	}
	data, mod, closeFile, err := b.static.read(name)
	if err != nil {
		if ext := path.Ext(name); ext != "" && ext != ".html" {
			http.NotFound(w, r)
			return
		}
		name = "index.html"
		if data, mod, closeFile, err = b.static.read(name); err != nil {
			http.NotFound(w, r)
			return
		}
	}
	defer closeFile()
	if strings.HasPrefix(name, "assets/") {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	http.ServeContent(w, r, name, mod, data)
}

// read opens a regular file of the app; call closeFile when done.
func (s *staticHandler) read(name string) (_ io.ReadSeeker, _ time.Time, closeFile func(), _ error) {
	f, err := s.fsys.Open(name)
	if err != nil {
		return nil, time.Time{}, nil, err
	}
	st, err := f.Stat()
	if err != nil || st.IsDir() {
		_ = f.Close()
		return nil, time.Time{}, nil, errors.New("not a file")
	}
	if rs, ok := f.(io.ReadSeeker); ok {
		return rs, st.ModTime(), func() { _ = f.Close() }, nil
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, time.Time{}, nil, err
	}
	return bytes.NewReader(b), st.ModTime(), func() {}, nil
}
