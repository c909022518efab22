// Package ratelimit holds token buckets keyed by caller (a user or a client
// IP) and kind of action, so that one noisy client slows down alone.
//
// Concurrency: a *Limiter is safe for concurrent use. Buckets live in
// sharded maps; Allow holds one shard's lock only to find or create a
// bucket, and charges the bucket outside it. One janitor goroutine per
// Limiter evicts idle buckets that have refilled, so memory follows the
// number of recently active keys and the sweep never runs inside Allow;
// Close stops it.
package ratelimit

import (
	"fmt"
	"hash/maphash"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Kind is a class of action with its own budget.
type Kind uint8

// Kinds of action. The names (String) are used in error messages and in
// ParseKind.
const (
	KindMessage Kind = iota // chat messages, private messages, file posts
	KindTyping              // typing indicators
	KindJoin                // room joins
	KindUpload              // file uploads
	KindConnect             // stream opens, keyed by client IP
	KindOther               // every other call or command
	numKinds
)

var kindNames = [numKinds]string{"message", "typing", "join", "upload", "connect", "other"}

// String returns the kind's name: "message", "typing", "join", "upload",
// "connect" or "other".
func (k Kind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// ParseKind parses a kind name as String returns it.
func ParseKind(s string) (Kind, error) {
	for k, n := range kindNames {
		if n == s {
			return Kind(k), nil
		}
	}
	return 0, fmt.Errorf("ratelimit: unknown kind %q", s)
}

// Rate is a token bucket: PerSecond tokens are added each second up to
// Burst. The zero Rate means the kind's default; a negative PerSecond
// means no limit.
type Rate struct {
	PerSecond float64
	Burst     int
}

// DefaultRates are used for kinds that Config.Rates leaves out or zero.
var DefaultRates = map[Kind]Rate{
	KindMessage: {PerSecond: 5, Burst: 10},
	KindTyping:  {PerSecond: 2, Burst: 5},
	KindJoin:    {PerSecond: 1, Burst: 5},
	KindUpload:  {PerSecond: 0.5, Burst: 3},
	KindConnect: {PerSecond: 5, Burst: 20},
	KindOther:   {PerSecond: 10, Burst: 20},
}

// ParseRate parses "N/unit[:burst]", where unit is s, m or h, for
// example "5/s:10" or "30/m". Without a burst, the burst is N rounded up
// (at least 1). "unlimited" gives a negative PerSecond.
func ParseRate(s string) (Rate, error) {
	if s == "unlimited" {
		return Rate{PerSecond: -1}, nil
	}
	spec, burstStr, hasBurst := strings.Cut(s, ":")
	nStr, unit, ok := strings.Cut(spec, "/")
	if !ok {
		return Rate{}, fmt.Errorf("ratelimit: rate %q: want N/unit[:burst], e.g. 5/s:10", s)
	}
	n, err := strconv.ParseFloat(nStr, 64)
	if err != nil || n <= 0 || math.IsInf(n, 0) || math.IsNaN(n) {
		return Rate{}, fmt.Errorf("ratelimit: rate %q: count must be a positive number", s)
	}
	var per float64
	switch unit {
	case "s":
		per = 1
	case "m":
		per = 60
	case "h":
		per = 3600
	default:
		return Rate{}, fmt.Errorf("ratelimit: rate %q: unit must be s, m or h", s)
	}
	burst := max(1, int(math.Ceil(n)))
	if hasBurst {
		if burst, err = strconv.Atoi(burstStr); err != nil || burst < 1 {
			return Rate{}, fmt.Errorf("ratelimit: rate %q: burst must be a positive integer", s)
		}
	}
	return Rate{PerSecond: n / per, Burst: burst}, nil
}

// ParseConfig parses a flag value "kind=rate,kind=rate", each rate in
// ParseRate's form, e.g. "message=5/s:10,upload=unlimited". The empty
// string gives the zero Config (all defaults).
func ParseConfig(s string) (Config, error) {
	var cfg Config
	if strings.TrimSpace(s) == "" {
		return cfg, nil
	}
	cfg.Rates = make(map[Kind]Rate)
	for item := range strings.SplitSeq(s, ",") {
		name, spec, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return Config{}, fmt.Errorf("ratelimit: %q: want kind=rate", item)
		}
		k, err := ParseKind(name)
		if err != nil {
			return Config{}, err
		}
		if _, dup := cfg.Rates[k]; dup {
			return Config{}, fmt.Errorf("ratelimit: kind %s given twice", k)
		}
		if cfg.Rates[k], err = ParseRate(spec); err != nil {
			return Config{}, err
		}
	}
	return cfg, nil
}

// Config configures a Limiter; the zero Config uses DefaultRates.
type Config struct {
	// Rates overrides DefaultRates per kind; missing or zero entries keep
	// the default.
	Rates map[Kind]Rate
	// IdleAfter is how long a full bucket is kept unused before it may be
	// evicted; default 5 minutes. A bucket that has not refilled is never
	// evicted, since that would hand its key a fresh burst.
	IdleAfter time.Duration
}

const (
	defaultIdleAfter = 5 * time.Minute
	numShards        = 64
)

// Limiter rate-limits actions per (key, kind). Safe for concurrent use.
type Limiter struct {
	limits [numKinds]struct {
		limit rate.Limit
		burst int
	}
	idle   time.Duration
	seed   maphash.Seed
	shards [numShards]shard

	refused [numKinds]atomic.Int64 // by kind; see Refused

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

type shard struct {
	mu      sync.RWMutex
	buckets map[bucketKey]*bucket
}

type bucketKey struct {
	key  string
	kind Kind
}

type bucket struct {
	lim      *rate.Limiter
	lastUsed atomic.Int64 // Unix nanoseconds
}

// New returns a Limiter for cfg and starts its janitor; call Close when
// done with it.
func New(cfg Config) *Limiter {
	l := &Limiter{idle: cfg.IdleAfter, seed: maphash.MakeSeed(), stop: make(chan struct{}), done: make(chan struct{})}
	if l.idle <= 0 {
		l.idle = defaultIdleAfter
	}
	for k := range numKinds {
		r := DefaultRates[k]
		if c, ok := cfg.Rates[k]; ok && c != (Rate{}) {
			r = c
		}
		if r.PerSecond < 0 {
			l.limits[k].limit, l.limits[k].burst = rate.Inf, 0
			continue
		}
		l.limits[k].limit, l.limits[k].burst = rate.Limit(r.PerSecond), max(1, r.Burst)
	}
	for i := range l.shards {
		l.shards[i].buckets = make(map[bucketKey]*bucket)
	}
	go l.janitor()
	return l
}

// Close stops the janitor and waits for it. The Limiter still answers
// Allow afterwards, but no longer evicts. Close is idempotent and always
// returns nil.
func (l *Limiter) Close() error {
	l.closeOnce.Do(func() { close(l.stop) })
	<-l.done
	return nil
}

func (l *Limiter) janitor() {
	defer close(l.done)
	t := time.NewTicker(l.idle / 2)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case now := <-t.C:
			l.sweep(now)
		}
	}
}

// Allow charges one action of kind to key. When the bucket is empty it
// returns false and how long until a token is available; the refused
// action costs nothing, so a client that waits retryAfter gets through.
func (l *Limiter) Allow(key string, kind Kind) (ok bool, retryAfter time.Duration) {
	ok, retryAfter = l.allowAt(key, kind, time.Now())
	if !ok && kind < numKinds {
		l.refused[kind].Add(1)
	}
	return ok, retryAfter
}

// Refused counts the calls of kind that Allow has refused, ever: a plain
// counter that the metrics collector reads, so that Allow stays free of
// any metrics library.
func (l *Limiter) Refused(kind Kind) int64 {
	if kind >= numKinds {
		return 0
	}
	return l.refused[kind].Load()
}

// Kinds lists every Kind, in order.
func Kinds() []Kind {
	out := make([]Kind, numKinds)
	for k := range numKinds {
		out[k] = k
	}
	return out
}

func (l *Limiter) allowAt(key string, kind Kind, now time.Time) (bool, time.Duration) {
	if kind >= numKinds {
		kind = KindOther
	}
	if l.limits[kind].limit == rate.Inf {
		return true, 0
	}
	b := l.bucket(bucketKey{key, kind}, now)
	b.lastUsed.Store(now.UnixNano())
	// AllowN takes a token only when it grants one, so refused actions are
	// free. (Reserve-then-cancel would be too, but cancelling with times
	// that concurrent callers read out of order hands back extra tokens.)
	if b.lim.AllowN(now, 1) {
		return true, 0
	}
	need := 1 - b.lim.TokensAt(now)
	d := time.Duration(need / float64(l.limits[kind].limit) * float64(time.Second))
	return false, max(d, time.Millisecond)
}

func (l *Limiter) bucket(k bucketKey, now time.Time) *bucket {
	sh := &l.shards[maphash.String(l.seed, k.key)%numShards]
	sh.mu.RLock()
	b := sh.buckets[k]
	sh.mu.RUnlock()
	if b != nil {
		return b
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if b = sh.buckets[k]; b != nil {
		return b
	}
	lim := l.limits[k.kind]
	b = &bucket{lim: rate.NewLimiter(lim.limit, lim.burst)}
	sh.buckets[k] = b
	return b
}

// sweep drops buckets unused for IdleAfter that are full again, which are
// equivalent to new ones. It locks one shard at a time so Allow on the
// other shards never waits for it.
func (l *Limiter) sweep(now time.Time) {
	cutoff := now.Add(-l.idle).UnixNano()
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for k, b := range sh.buckets {
			if b.lastUsed.Load() < cutoff && b.lim.TokensAt(now) >= float64(b.lim.Burst()) {
				delete(sh.buckets, k)
			}
		}
		sh.mu.Unlock()
	}
}

// Len returns the number of buckets held, for tests and metrics.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.RLock()
		n += len(sh.buckets)
		sh.mu.RUnlock()
	}
	return n
}
