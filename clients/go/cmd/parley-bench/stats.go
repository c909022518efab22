package main

import (
	"bytes"
	"math/bits"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Every benchmark message's text is
//
//	b|<run>|<step>|<publisher>|<seq>|<unix nanos>|<padding>
//
// where the time is when the message was due to be sent (open loop: a
// publisher that falls behind its schedule does not hide the delay), seq
// counts from 0 per publisher and step, and the padding brings the text to
// the payload size.

// formatText appends a benchmark message's text to dst.
func formatText(dst []byte, run string, step, pub int, seq int64, due time.Time, size int) []byte {
	dst = append(dst, "b|"...)
	dst = append(dst, run...)
	dst = append(dst, '|')
	dst = strconv.AppendInt(dst, int64(step), 10)
	dst = append(dst, '|')
	dst = strconv.AppendInt(dst, int64(pub), 10)
	dst = append(dst, '|')
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, '|')
	dst = strconv.AppendInt(dst, due.UnixNano(), 10)
	dst = append(dst, '|')
	for len(dst) < size {
		dst = append(dst, 'x')
	}
	return dst
}

// parseText reads a benchmark text; ok is false for anything else.
func parseText(b []byte) (run []byte, step, pub int, seq, ts int64, ok bool) {
	if !bytes.HasPrefix(b, []byte("b|")) {
		return
	}
	b = b[2:]
	i := bytes.IndexByte(b, '|')
	if i < 0 {
		return
	}
	run, b = b[:i], b[i+1:]
	var n [4]int64
	for k := range n {
		v, rest, good := cutInt(b)
		if !good {
			return
		}
		n[k], b = v, rest
	}
	return run, int(n[0]), int(n[1]), n[2], n[3], true
}

// cutInt parses the decimal before the next '|' and returns what follows it.
func cutInt(b []byte) (v int64, rest []byte, ok bool) {
	for i, c := range b {
		switch {
		case c == '|' && i > 0:
			return v, b[i+1:], true
		case c < '0' || c > '9' || i > 18:
			return 0, nil, false
		}
		v = v*10 + int64(c-'0')
	}
	return 0, nil, false
}

// tracker counts what one receiving session got. The session's reader
// calls observe; reset and the readers of the counts hold mu, so a
// tracker is safe for concurrent use.
type tracker struct {
	run      []byte
	received *atomic.Int64 // shared: unique deliveries of the current step, all sessions
	// On several nodes: this session's node, and each publisher's (by
	// publisher id), to tell deliveries made on the sender's node from
	// those that crossed NATS. pubNode is nil on one node.
	node    int
	pubNode []int

	mu     sync.Mutex
	step   int
	pubs   map[int]*seen
	hist   histogram
	route  [2]histogram // [0] same node as the publisher, [1] another node
	unique int64
	dups   int64
	ooo    int64 // arrived after a higher seq of the same publisher
	late   int64 // belongs to an earlier step
	alien  int64 // not a benchmark message of this run
	lastAt int64 // unix nanos of the last counted delivery
}

// seen is the seqs received from one publisher.
type seen struct {
	bits []uint64
	max  int64
}

func newTracker(run string, received *atomic.Int64) *tracker {
	return &tracker{run: []byte(run), received: received, pubs: map[int]*seen{}}
}

func (t *tracker) observe(text []byte, now int64) {
	run, step, pub, seq, ts, ok := parseText(text)
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case !ok || !bytes.Equal(run, t.run) || seq < 0:
		t.alien++
		return
	case step != t.step:
		t.late++
		return
	}
	p := t.pubs[pub]
	if p == nil {
		p = &seen{max: -1}
		t.pubs[pub] = p
	}
	w, bit := seq/64, uint64(1)<<(seq%64)
	for int64(len(p.bits)) <= w {
		p.bits = append(p.bits, 0)
	}
	if p.bits[w]&bit != 0 {
		t.dups++
		return
	}
	p.bits[w] |= bit
	if seq < p.max {
		t.ooo++
	}
	p.max = max(p.max, seq)
	t.unique++
	t.lastAt = now
	t.hist.record((now - ts) / 1e3)
	if t.pubNode != nil && pub >= 0 && pub < len(t.pubNode) {
		r := 0
		if t.pubNode[pub] != t.node {
			r = 1
		}
		t.route[r].record((now - ts) / 1e3)
	}
	t.received.Add(1)
}

// uniqueCount is the step's unique deliveries so far.
func (t *tracker) uniqueCount() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.unique
}

// reset starts a new step.
func (t *tracker) reset(step int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.step, t.pubs, t.hist, t.route = step, map[int]*seen{}, histogram{}, [2]histogram{}
	t.unique, t.dups, t.ooo, t.late, t.alien, t.lastAt = 0, 0, 0, 0, 0, 0
}

// counts is the sum of trackers' counts for one step.
type counts struct {
	unique, dups, ooo, late, alien int64
	lastAt                         int64
	hist                           histogram
	route                          [2]histogram
}

func (c *counts) add(t *tracker) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c.unique += t.unique
	c.dups += t.dups
	c.ooo += t.ooo
	c.late += t.late
	c.alien += t.alien
	c.lastAt = max(c.lastAt, t.lastAt)
	c.hist.merge(&t.hist)
	c.route[0].merge(&t.route[0])
	c.route[1].merge(&t.route[1])
}

// histogram records microseconds in log-linear buckets: exact below 64,
// then 32 buckets per power of two (at most about 3% too high).
type histogram struct {
	b   []uint64
	n   uint64
	max int64
}

const histSub = 32

func bucketOf(v int64) int {
	if v < 2*histSub {
		return int(max(v, 0))
	}
	shift := bits.Len64(uint64(v)) - 6
	return shift*histSub + int(v>>shift)
}

// upperOf is the largest value that falls in bucket i.
func upperOf(i int) int64 {
	if i < 2*histSub {
		return int64(i)
	}
	shift := i/histSub - 1
	m := int64(i%histSub + histSub)
	return (m+1)<<shift - 1
}

func (h *histogram) record(us int64) {
	i := bucketOf(us)
	for len(h.b) <= i {
		h.b = append(h.b, make([]uint64, i+1-len(h.b)+64)...)
	}
	h.b[i]++
	h.n++
	h.max = max(h.max, us)
}

func (h *histogram) merge(o *histogram) {
	for len(h.b) < len(o.b) {
		h.b = append(h.b, 0)
	}
	for i, c := range o.b {
		h.b[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile (0 < q <= 1) in microseconds.
func (h *histogram) quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = max(rank, 1)
	var acc uint64
	for i, c := range h.b {
		if acc += c; acc >= rank {
			return min(upperOf(i), h.max)
		}
	}
	return h.max
}

// latency is a histogram's summary in milliseconds.
type latency struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func (h *histogram) summary() latency {
	ms := func(us int64) float64 { return float64(us) / 1e3 }
	return latency{P50: ms(h.quantile(.5)), P90: ms(h.quantile(.9)), P99: ms(h.quantile(.99)), Max: ms(h.max)}
}
