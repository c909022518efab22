package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sync/semaphore"
)

// Argon2id parameters for new hashes: OWASP's second listed configuration
// (19 MiB, 2 passes, 1 lane). It costs roughly 20-40 ms on one core, which
// keeps a 2-core server responsive under a burst of logins while staying
// far from cheap to brute-force.
const (
	argonMemoryKiB = 19 * 1024
	argonTime      = 2
	argonThreads   = 1
	argonSaltLen   = 16
	argonKeyLen    = 32
)

// Limits on parameters read from a stored hash, so a corrupt or hostile
// record cannot make a login allocate gigabytes or spin for minutes.
const (
	maxArgonMemoryKiB = 256 * 1024
	maxArgonTime      = 16
	maxArgonKeyLen    = 128
)

// HashPassword returns an argon2id hash of pw in the PHC string format,
// e.g. $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>.
func HashPassword(pw string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: random salt: %w", err)
	}
	key := argon2.IDKey([]byte(pw), salt, argonTime, argonMemoryKiB, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, argonMemoryKiB, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// CheckPassword reports whether pw matches encoded, an argon2id PHC string
// or a bcrypt hash ($2a$, $2b$, $2y$). Unknown or malformed encodings never
// match. The comparison is constant-time.
func CheckPassword(encoded, pw string) bool {
	switch {
	case strings.HasPrefix(encoded, "$argon2id$"):
		p, salt, want, ok := parseArgon2id(encoded)
		if !ok {
			return false
		}
		got := argon2.IDKey([]byte(pw), salt, p.time, p.memory, p.threads, uint32(len(want)))
		return subtle.ConstantTimeCompare(got, want) == 1
	case strings.HasPrefix(encoded, "$2a$"), strings.HasPrefix(encoded, "$2b$"), strings.HasPrefix(encoded, "$2y$"):
		return bcrypt.CompareHashAndPassword([]byte(encoded), []byte(pw)) == nil
	}
	return false
}

// NeedsRehash reports whether encoded is not an argon2id hash with the
// current parameters, so a login that just succeeded should store a fresh
// HashPassword result (this is how bcrypt records migrate).
func NeedsRehash(encoded string) bool {
	p, _, key, ok := parseArgon2id(encoded)
	return !ok || p.memory != argonMemoryKiB || p.time != argonTime || p.threads != argonThreads || len(key) != argonKeyLen
}

type argonParams struct {
	memory  uint32
	time    uint32
	threads uint8
}

func parseArgon2id(encoded string) (p argonParams, salt, key []byte, ok bool) {
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return p, nil, nil, false
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return p, nil, nil, false
	}
	if n, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.memory, &p.time, &p.threads); err != nil || n != 3 {
		return p, nil, nil, false
	}
	if p.memory == 0 || p.memory > maxArgonMemoryKiB || p.time == 0 || p.time > maxArgonTime || p.threads == 0 {
		return p, nil, nil, false
	}
	var err error
	if salt, err = base64.RawStdEncoding.Strict().DecodeString(parts[4]); err != nil || len(salt) < 8 {
		return p, nil, nil, false
	}
	if key, err = base64.RawStdEncoding.Strict().DecodeString(parts[5]); err != nil || len(key) < 16 || len(key) > maxArgonKeyLen {
		return p, nil, nil, false
	}
	return p, salt, key, true
}

// Bounding the password hashes in flight. An argon2id hash holds its
// memory parameter (19 MiB for new hashes, up to maxArgonMemoryKiB for
// stored ones) for the tens of milliseconds it runs, and saturates a core
// meanwhile; nothing else bounds how many run at once, so a flood of
// logins (wrong passwords cost as much as right ones) took a server's
// memory and its chat latency with it. A HashLimiter admits a hash only
// when its memory fits a budget, lets a few more wait briefly, and refuses
// the rest with ErrHashBusy, which callers answer Unavailable with a
// retry delay.

// ErrHashBusy is returned by HashLimiter when no room for a hash freed up
// within its wait: the caller should answer "retry later".
var ErrHashBusy = errors.New("auth: too many password checks in progress")

// HashLimiterConfig sizes a HashLimiter. Zero fields take their defaults.
type HashLimiterConfig struct {
	// MemoryBudget is how many bytes the hashes in flight may hold at
	// once; each counts its memory parameter (bcrypt, and anything
	// smaller than a new argon2id hash, counts as a new argon2id hash).
	// It is raised to one new hash if smaller. Default DefaultHashMemoryBudget.
	MemoryBudget int64
	// MaxConcurrent caps the hashes in flight whatever the memory: each
	// saturates a core, and the cores must stay free enough for chat.
	// Default half of GOMAXPROCS, at least 1.
	MaxConcurrent int
	// MaxWaiting is how many hashes may wait for room; more are refused
	// at once. A waiter holds no hash memory, only its goroutine. Default
	// 16 × the hashes the budget admits: about what those finish within
	// the default MaxWait (a new hash takes some 20-40 ms).
	MaxWaiting int
	// MaxWait is how long a hash waits for room before ErrHashBusy.
	// Default 500ms.
	MaxWait time.Duration
}

// Defaults for HashLimiterConfig.
const (
	DefaultHashMemoryBudget = 256 << 20
	DefaultHashMaxWait      = 500 * time.Millisecond
)

// HashMemory is the memory one new password hash holds, in bytes.
const HashMemory = argonMemoryKiB << 10

// HashLimiter bounds the memory and the number of password hashes in
// flight. Safe for concurrent use; the zero value is not usable (use
// NewHashLimiter).
type HashLimiter struct {
	sem        *semaphore.Weighted // in KiB of hash memory
	capKiB     int64
	waiting    atomic.Int64
	maxWaiting int64
	maxWait    time.Duration
}

// NewHashLimiter returns a limiter sized by cfg.
func NewHashLimiter(cfg HashLimiterConfig) *HashLimiter {
	if cfg.MemoryBudget <= 0 {
		cfg.MemoryBudget = DefaultHashMemoryBudget
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = max(1, runtime.GOMAXPROCS(0)/2)
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultHashMaxWait
	}
	capKiB := min(cfg.MemoryBudget>>10, int64(cfg.MaxConcurrent)*argonMemoryKiB)
	capKiB = max(capKiB, argonMemoryKiB)
	if cfg.MaxWaiting <= 0 {
		cfg.MaxWaiting = 16 * int(capKiB/argonMemoryKiB)
	}
	return &HashLimiter{sem: semaphore.NewWeighted(capKiB), capKiB: capKiB, maxWaiting: int64(cfg.MaxWaiting), maxWait: cfg.MaxWait}
}

// Slots is how many new hashes the limiter runs at once.
func (l *HashLimiter) Slots() int { return int(l.capKiB / argonMemoryKiB) }

// RetryAfter is the delay to suggest to a caller refused with ErrHashBusy.
func (l *HashLimiter) RetryAfter() time.Duration { return 2 * l.maxWait }

// acquire waits for room for a hash of memKiB; release must follow a nil
// return. ctx ending first returns its error.
func (l *HashLimiter) acquire(ctx context.Context, memKiB int64) (int64, error) {
	w := min(max(memKiB, argonMemoryKiB), l.capKiB)
	if l.sem.TryAcquire(w) {
		return w, nil
	}
	if l.waiting.Add(1) > l.maxWaiting {
		l.waiting.Add(-1)
		return 0, ErrHashBusy
	}
	defer l.waiting.Add(-1)
	wctx, cancel := context.WithTimeout(ctx, l.maxWait)
	defer cancel()
	if err := l.sem.Acquire(wctx, w); err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, ErrHashBusy
	}
	return w, nil
}

// Hash is HashPassword within the limiter's bounds.
func (l *HashLimiter) Hash(ctx context.Context, pw string) (string, error) {
	w, err := l.acquire(ctx, argonMemoryKiB)
	if err != nil {
		return "", err
	}
	defer l.sem.Release(w)
	return HashPassword(pw)
}

// Check is CheckPassword within the limiter's bounds: ok reports a match,
// err is ErrHashBusy or ctx's error when the check did not run. A
// malformed hash is not computed, so it takes no room.
func (l *HashLimiter) Check(ctx context.Context, encoded, pw string) (ok bool, err error) {
	var memKiB int64
	switch {
	case strings.HasPrefix(encoded, "$argon2id$"):
		p, _, _, valid := parseArgon2id(encoded)
		if !valid {
			return false, nil
		}
		memKiB = int64(p.memory)
	case strings.HasPrefix(encoded, "$2"):
		memKiB = 4 // bcrypt's state; counted as one new hash
	default:
		return false, nil
	}
	w, err := l.acquire(ctx, memKiB)
	if err != nil {
		return false, err
	}
	defer l.sem.Release(w)
	return CheckPassword(encoded, pw), nil
}
