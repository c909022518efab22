package storeutil

import (
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

// TestIDGen was TestIDGen in both the sqlite and postgres packages.
func TestIDGen(t *testing.T) {
	t.Parallel()
	var g IDGen
	t0 := time.UnixMilli(1_700_000_000_000)
	times := []time.Time{t0, t0, t0, t0.Add(-time.Hour), t0.Add(time.Millisecond), t0.Add(time.Second)}
	prev := ""
	for i, now := range times {
		id := g.Next(now)
		if len(id) != 32 || id <= prev {
			t.Fatalf("id %d = %s after %s: not increasing", i, id, prev)
		}
		prev = id
	}
	// Force the random part to overflow: the next id borrows a millisecond.
	for i := 6; i < 16; i++ {
		g.last[i] = 0xff
	}
	id := g.Next(t0)
	if id <= prev {
		t.Fatalf("after overflow: %s <= %s", id, prev)
	}
}

func TestLoadMigrations(t *testing.T) {
	t.Parallel()
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	ms, err := LoadMigrations(fstest.MapFS{
		"m/0002_b.sql": file("B"),
		"m/0001_a.sql": file("A"),
		"m/0010_c.sql": file("C"), // sorted by number, not by name
		"m/0003_d.sql": file("D"),
		"m/0004_e.sql": file("E"), "m/0005_f.sql": file("F"), "m/0006_g.sql": file("G"),
		"m/0007_h.sql": file("H"), "m/0008_i.sql": file("I"), "m/0009_j.sql": file("J"),
	}, "m")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i, m := range ms {
		if m.Version != i+1 {
			t.Fatalf("migration %d has version %d", i, m.Version)
		}
		got = append(got, m.SQL)
	}
	if s := strings.Join(got, ""); s != "ABDEFGHIJC" {
		t.Fatalf("order %s", s)
	}
	for name, fsys := range map[string]fstest.MapFS{
		"gap":       {"m/0001_a.sql": file("A"), "m/0003_c.sql": file("C")},
		"twice":     {"m/0001_a.sql": file("A"), "m/0001_b.sql": file("B")},
		"no number": {"m/0001_a.sql": file("A"), "m/init.sql": file("B")},
		"zero":      {"m/0000_a.sql": file("A")},
	} {
		if _, err := LoadMigrations(fsys, "m"); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
}

func TestLimits(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		f        func(int) int
		in, want int
	}{
		{HistoryLimit, 0, DefaultHistoryLimit}, {HistoryLimit, -5, 1}, {HistoryLimit, 7, 7}, {HistoryLimit, 1000, MaxHistoryLimit},
		{ConversationsLimit, 0, DefaultConversationsLimit}, {ConversationsLimit, -1, 1}, {ConversationsLimit, 999, MaxConversationsLimit},
		{DirectLimit, 0, MaxDirectLimit}, {DirectLimit, -1, MaxDirectLimit}, {DirectLimit, 3, 3}, {DirectLimit, MaxDirectLimit + 1, MaxDirectLimit},
	} {
		if got := tt.f(tt.in); got != tt.want {
			t.Errorf("limit(%d) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestNanos(t *testing.T) {
	t.Parallel()
	if Nanos(time.Time{}) != 0 || !FromNanos(0).IsZero() {
		t.Fatal("zero time does not round-trip as 0")
	}
	at := time.Date(2025, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))
	if got := FromNanos(Nanos(at)); !got.Equal(at) || got.Location() != time.UTC {
		t.Fatalf("round trip = %v", got)
	}
}
