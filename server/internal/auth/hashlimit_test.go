package auth

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestHashLimiterSizing: the budget is counted in new hashes, at least
// one, and capped by MaxConcurrent.
func TestHashLimiterSizing(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		cfg  HashLimiterConfig
		want int
	}{
		{HashLimiterConfig{MemoryBudget: 1 << 20, MaxConcurrent: 8}, 1},        // less than one hash: one
		{HashLimiterConfig{MemoryBudget: 3 * HashMemory, MaxConcurrent: 8}, 3}, // memory bound
		{HashLimiterConfig{MemoryBudget: 1 << 30, MaxConcurrent: 2}, 2},        // core bound
	} {
		if got := NewHashLimiter(tt.cfg).Slots(); got != tt.want {
			t.Errorf("%+v: %d slots, want %d", tt.cfg, got, tt.want)
		}
	}
}

// TestHashLimiterRefusesExcess fills the limiter and checks that a hash
// then waits at most MaxWait before ErrHashBusy, that waiters past
// MaxWaiting are refused at once, that a stored hash asking for more
// memory than the budget still runs (alone) instead of waiting forever,
// and that room freed lets hashes run again.
func TestHashLimiterRefusesExcess(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := NewHashLimiter(HashLimiterConfig{MemoryBudget: 2 * HashMemory, MaxConcurrent: 2, MaxWaiting: 1, MaxWait: 50 * time.Millisecond})
	hash, err := HashPassword("pw")
	if err != nil {
		t.Fatal(err)
	}
	held, err := l.acquire(ctx, 2*argonMemoryKiB) // every slot
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Check(ctx, hash, "pw"); !errors.Is(err, ErrHashBusy) {
		t.Fatalf("Check on a full limiter: %v, want ErrHashBusy", err)
	}
	if _, err := l.Hash(ctx, "pw"); !errors.Is(err, ErrHashBusy) {
		t.Fatalf("Hash on a full limiter: %v, want ErrHashBusy", err)
	}
	// One waiter is allowed; a second is refused without waiting.
	waiting := make(chan error, 1)
	go func() { _, err := l.Check(ctx, hash, "pw"); waiting <- err }()
	for l.waiting.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	if _, err := l.Check(ctx, hash, "pw"); !errors.Is(err, ErrHashBusy) {
		t.Fatalf("Check past MaxWaiting: %v, want ErrHashBusy", err)
	}
	if err := <-waiting; !errors.Is(err, ErrHashBusy) {
		t.Fatalf("the waiter: %v, want ErrHashBusy after MaxWait", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := l.Check(cctx, hash, "pw"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Check with a cancelled context: %v", err)
	}
	l.sem.Release(held)

	if ok, err := l.Check(ctx, hash, "pw"); err != nil || !ok {
		t.Fatalf("Check with room: %v, %v", ok, err)
	}
	if ok, err := l.Check(ctx, hash, "wrong"); err != nil || ok {
		t.Fatalf("Check of a wrong password: %v, %v", ok, err)
	}
	// A stored hash of 64 MiB is over this 38 MiB budget: it takes it all.
	big := "$argon2id$v=19$m=65536,t=1,p=1$c2FsdHNhbHRzYWx0$" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	if _, err := l.Check(ctx, big, "pw"); err != nil {
		t.Fatalf("Check of a hash over the budget: %v", err)
	}
	if ok, err := l.Check(ctx, "not a hash", "pw"); err != nil || ok {
		t.Fatalf("Check of a malformed hash: %v, %v", ok, err)
	}
}
