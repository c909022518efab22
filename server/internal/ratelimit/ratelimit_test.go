package ratelimit

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

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
			l := New(Config{})
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
	l := New(Config{Rates: map[Kind]Rate{
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
	l := New(Config{IdleAfter: time.Minute})
	now := time.Now()
	for i := range 1000 {
		l.allowAt(fmt.Sprint("ip-", i), KindConnect, now)
	}
	// Drain one bucket so it is not full when the others are swept.
	for range 30 {
		l.allowAt("busy", KindUpload, now)
	}
	if n := l.Len(); n != 1001 {
		t.Fatalf("Len = %d, want 1001", n)
	}
	// Two minutes on, new keys land in every shard and make it sweep: the
	// idle buckets have all refilled (the drained upload one in 6s), so only
	// the new keys remain.
	later := now.Add(2 * time.Minute)
	for i := range 5000 {
		l.allowAt(fmt.Sprint("new-", i), KindOther, later)
	}
	if n := l.Len(); n != 5000 {
		t.Fatalf("Len = %d after the sweep, want 5000", n)
	}
}

func TestNoEvictionBeforeRefill(t *testing.T) {
	t.Parallel()
	// A slow bucket that is still empty after IdleAfter must survive the
	// sweep, or its key would get a fresh burst.
	l := New(Config{IdleAfter: time.Second, Rates: map[Kind]Rate{KindUpload: {PerSecond: 1.0 / 3600, Burst: 1}}})
	now := time.Now()
	l.allowAt("slow", KindUpload, now)
	if ok, _ := l.allowAt("slow", KindUpload, now); ok {
		t.Fatal("second upload allowed")
	}
	later := now.Add(time.Minute)
	for i := range 2000 {
		l.allowAt(fmt.Sprint("k", i), KindOther, later)
	}
	if ok, _ := l.allowAt("slow", KindUpload, later); ok {
		t.Fatal("an evicted bucket handed out a fresh burst")
	}
}

func TestConcurrent(t *testing.T) {
	t.Parallel()
	l := New(Config{Rates: map[Kind]Rate{KindMessage: {PerSecond: 1e-9, Burst: 100}}})
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
	l := New(Config{Rates: map[Kind]Rate{KindMessage: {PerSecond: 1e12, Burst: 1 << 30}}})
	b.ReportAllocs()
	for b.Loop() {
		l.Allow("alice", KindMessage)
	}
}

func BenchmarkAllowParallel(b *testing.B) {
	l := New(Config{Rates: map[Kind]Rate{KindMessage: {PerSecond: 1e12, Burst: 1 << 30}}})
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
