package ratelimit

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newLimiter(tb testing.TB, cfg Config) *Limiter {
	tb.Helper()
	l := New(cfg)
	tb.Cleanup(func() { l.Close() })
	return l
}

func TestParseRate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in      string
		want    Rate
		wantErr bool
	}{
		{in: "5/s:10", want: Rate{5, 10}},
		{in: "5/s", want: Rate{5, 5}},
		{in: "0.5/s:3", want: Rate{0.5, 3}},
		{in: "0.5/s", want: Rate{0.5, 1}},
		{in: "30/m", want: Rate{0.5, 30}},
		{in: "3600/h:1", want: Rate{1, 1}},
		{in: "unlimited", want: Rate{PerSecond: -1}},
		{in: "", wantErr: true},
		{in: "5", wantErr: true},
		{in: "5/d", wantErr: true},
		{in: "0/s", wantErr: true},
		{in: "-1/s", wantErr: true},
		{in: "NaN/s", wantErr: true},
		{in: "5/s:0", wantErr: true},
		{in: "5/s:x", wantErr: true},
	} {
		got, err := ParseRate(tc.in)
		if (err != nil) != tc.wantErr || (!tc.wantErr && got != tc.want) {
			t.Errorf("ParseRate(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestParseConfig(t *testing.T) {
	t.Parallel()
	cfg, err := ParseConfig("message=3/s:6, upload=unlimited")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Rates) != 2 || cfg.Rates[KindMessage] != (Rate{3, 6}) || cfg.Rates[KindUpload].PerSecond >= 0 {
		t.Fatalf("cfg = %+v", cfg)
	}
	if cfg, err := ParseConfig(""); err != nil || cfg.Rates != nil {
		t.Fatalf("empty: %+v, %v", cfg, err)
	}
	for _, bad := range []string{"message", "bogus=1/s", "message=1/s,message=2/s", "message=fast"} {
		if _, err := ParseConfig(bad); err == nil {
			t.Errorf("ParseConfig(%q) succeeded", bad)
		}
	}
}

func TestKindNames(t *testing.T) {
	t.Parallel()
	for k := range numKinds {
		got, err := ParseKind(k.String())
		if err != nil || got != k {
			t.Errorf("ParseKind(%q) = %v, %v", k.String(), got, err)
		}
	}
	if _, err := ParseKind("bogus"); err == nil {
		t.Error("ParseKind(bogus) succeeded")
	}
}

// TestBurstThenRefuse drives every default rate through its burst on a
// fixed clock, then checks the retry hint and that waiting it out works.
func TestBurstThenRefuse(t *testing.T) {
	t.Parallel()
	for kind, r := range DefaultRates {
		t.Run(kind.String(), func(t *testing.T) {
			t.Parallel()
			l := newLimiter(t, Config{})
			now := time.Unix(1_000_000, 0)
			for i := range r.Burst {
				if ok, _ := l.allowAt("alice", kind, now); !ok {
					t.Fatalf("action %d of a burst of %d refused", i+1, r.Burst)
				}
			}
			ok, retry := l.allowAt("alice", kind, now)
			want := time.Duration(float64(time.Second) / r.PerSecond)
			if ok || retry < want-time.Millisecond || retry > want+time.Millisecond {
				t.Fatalf("over burst: ok=%v retry=%v, want refused with about %v", ok, retry, want)
			}
			// Refused actions are free: asking again at once gives the same hint.
			if _, again := l.allowAt("alice", kind, now); again != retry {
				t.Fatalf("second refusal hints %v, first %v", again, retry)
			}
			if ok, _ := l.allowAt("alice", kind, now.Add(retry)); !ok {
				t.Fatal("refused after waiting the retry hint")
			}
			// Another key and another kind are untouched.
			if ok, _ := l.allowAt("bob", kind, now); !ok {
				t.Fatal("another key was limited")
			}
		})
	}
}

func TestConfigOverrides(t *testing.T) {
	t.Parallel()
	l := newLimiter(t, Config{Rates: map[Kind]Rate{
		KindMessage: {PerSecond: 1, Burst: 1},
		KindTyping:  {PerSecond: -1},
		KindJoin:    {}, // zero keeps the default
	}})
	now := time.Unix(1_000_000, 0)
	if ok, _ := l.allowAt("k", KindMessage, now); !ok {
		t.Fatal("first message refused")
	}
	if ok, retry := l.allowAt("k", KindMessage, now); ok || retry != time.Second {
		t.Fatalf("second message: ok=%v retry=%v", ok, retry)
	}
	for range 1000 {
		if ok, _ := l.allowAt("k", KindTyping, now); !ok {
			t.Fatal("an unlimited kind was limited")
		}
	}
	for i := range DefaultRates[KindJoin].Burst {
		if ok, _ := l.allowAt("k", KindJoin, now); !ok {
			t.Fatalf("join %d refused under the default", i)
		}
	}
	if ok, _ := l.allowAt("k", Kind(200), now); !ok {
		t.Fatal("an unknown kind (charged as other) was refused at once")
	}
}

func TestEviction(t *testing.T) {
	t.Parallel()
	l := newLimiter(t, Config{IdleAfter: time.Minute})
	now := time.Now()
	for i := range 1000 {
		l.allowAt(fmt.Sprint("ip-", i), KindConnect, now)
	}
	// An upload bucket drained at 0.5/s refills in 6s; one drained at
	// 1/hour does not refill before the sweep and must survive it, or its
	// key would get a fresh burst.
	for range 5 {
		l.allowAt("busy", KindUpload, now)
	}
	slow := newLimiter(t, Config{IdleAfter: time.Minute, Rates: map[Kind]Rate{KindUpload: {PerSecond: 1.0 / 3600, Burst: 1}}})
	slow.allowAt("slow", KindUpload, now)
	if n := l.Len(); n != 1001 {
		t.Fatalf("Len = %d, want 1001", n)
	}
	later := now.Add(2 * time.Minute)
	l.sweep(later)
	slow.sweep(later)
	if n := l.Len(); n != 0 {
		t.Fatalf("Len = %d after the sweep, want 0", n)
	}
	if ok, _ := slow.allowAt("slow", KindUpload, later); ok || slow.Len() != 1 {
		t.Fatal("an empty slow bucket was evicted")
	}
	// A bucket used recently stays even when full.
	l.allowAt("recent", KindOther, later)
	l.sweep(later.Add(30 * time.Second))
	if l.Len() != 1 {
		t.Fatal("a recently used bucket was evicted")
	}
}

func TestJanitorAndClose(t *testing.T) {
	t.Parallel()
	l := New(Config{IdleAfter: 20 * time.Millisecond})
	l.allowAt("old", KindOther, time.Now().Add(-time.Hour))
	deadline := time.Now().Add(5 * time.Second)
	for l.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the janitor did not evict an idle bucket")
		}
		time.Sleep(5 * time.Millisecond)
	}
	l.Close()
	l.Close() // idempotent
	if ok, _ := l.Allow("k", KindOther); !ok {
		t.Fatal("Allow refused after Close")
	}
}

func TestConcurrent(t *testing.T) {
	t.Parallel()
	l := newLimiter(t, Config{Rates: map[Kind]Rate{KindMessage: {PerSecond: 1e-9, Burst: 100}}})
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		allowed int
	)
	for range 8 {
		wg.Go(func() {
			n := 0
			for range 100 {
				if ok, _ := l.Allow("shared", KindMessage); ok {
					n++
				}
			}
			mu.Lock()
			allowed += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if allowed != 100 {
		t.Fatalf("%d allowed across goroutines, want exactly the burst of 100", allowed)
	}
}

func BenchmarkAllow(b *testing.B) {
	l := newLimiter(b, Config{Rates: map[Kind]Rate{KindMessage: {PerSecond: 1e12, Burst: 1 << 30}}})
	b.ReportAllocs()
	for b.Loop() {
		l.Allow("alice", KindMessage)
	}
}

func BenchmarkAllowParallel(b *testing.B) {
	l := newLimiter(b, Config{Rates: map[Kind]Rate{KindMessage: {PerSecond: 1e12, Burst: 1 << 30}}})
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprint("user-", i)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.Allow(keys[i%len(keys)], KindMessage)
			i++
		}
	})
}
