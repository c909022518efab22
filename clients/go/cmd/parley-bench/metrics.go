package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// goStats are a Go server's live heap and goroutine count, read from its
// metrics listener (parleyd --metrics-addr): a GET of
// /debug/pprof/heap?gc=1 forces a collection first, so the heap figure is
// what the connections keep alive, not garbage they left.
type goStats struct {
	heapLive   int64
	goroutines int64
}

func scrapeGo(ctx context.Context, addr string) (goStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	get := func(path string) (io.ReadCloser, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return resp.Body, nil
	}
	var s goStats
	body, err := get("/debug/pprof/heap?gc=1")
	if err != nil {
		return s, err
	}
	_, _ = io.Copy(io.Discard, body)
	body.Close()
	if body, err = get("/metrics"); err != nil {
		return s, err
	}
	defer body.Close()
	sc := bufio.NewScanner(body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		var dst *int64
		switch {
		case !ok:
			continue
		case name == "go_memstats_heap_alloc_bytes":
			dst = &s.heapLive
		case name == "go_goroutines":
			dst = &s.goroutines
		default:
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return s, fmt.Errorf("metrics: %s: %w", name, err)
		}
		*dst = int64(f)
	}
	if err := sc.Err(); err != nil {
		return s, err
	}
	if s.goroutines == 0 {
		return s, fmt.Errorf("metrics at %s: no go_goroutines", addr)
	}
	return s, nil
}
