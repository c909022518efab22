package sealer_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/parleychat/parley/server/internal/sealer"
)

func key(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, sealer.KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func keyring(t testing.TB, active string, keys map[string][]byte) *sealer.Keyring {
	t.Helper()
	k, err := sealer.New(sealer.Config{Keys: keys, Active: active})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	good := make([]byte, 32)
	tests := []struct {
		name string
		cfg  sealer.Config
	}{
		{"no keys", sealer.Config{}},
		{"active missing", sealer.Config{Keys: map[string][]byte{"a": good}, Active: "b"}},
		{"short key", sealer.Config{Keys: map[string][]byte{"a": good[:16]}, Active: "a"}},
		{"empty id", sealer.Config{Keys: map[string][]byte{"": good}, Active: ""}},
		{"id with colon", sealer.Config{Keys: map[string][]byte{"a:b": good}, Active: "a:b"}},
		{"id too long", sealer.Config{Keys: map[string][]byte{strings.Repeat("x", 256): good}, Active: strings.Repeat("x", 256)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := sealer.New(tt.cfg); err == nil {
				t.Fatal("New succeeded, want error")
			}
		})
	}
}

func TestParseKeys(t *testing.T) {
	t.Parallel()
	k1, k2 := key(t), key(t)
	std, url := base64.StdEncoding.EncodeToString(k1), base64.RawURLEncoding.EncodeToString(k2)
	tests := []struct {
		name    string
		spec    string
		nil     bool
		active  string
		ids     []string
		wantErr bool
	}{
		{name: "empty", spec: "", nil: true},
		{name: "spaces", spec: "  ", nil: true},
		{name: "one", spec: "k1:" + std, active: "k1", ids: []string{"k1"}},
		{name: "two first active", spec: "k2:" + url + ", k1:" + std, active: "k2", ids: []string{"k1", "k2"}},
		{name: "no colon", spec: "k1" + std, wantErr: true},
		{name: "empty key", spec: "k1:", wantErr: true},
		{name: "bad base64", spec: "k1:!!!!", wantErr: true},
		{name: "short key", spec: "k1:" + base64.StdEncoding.EncodeToString(k1[:16]), wantErr: true},
		{name: "duplicate id", spec: "k1:" + std + ",k1:" + url, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			k, err := sealer.ParseKeys(tt.spec)
			if tt.wantErr {
				if err == nil {
					t.Fatal("want error")
				}
				if strings.Contains(err.Error(), std) {
					t.Fatalf("error leaks key material: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (k == nil) != tt.nil || k.Enabled() == tt.nil {
				t.Fatalf("keyring nil=%v enabled=%v, want nil=%v", k == nil, k.Enabled(), tt.nil)
			}
			if k.ActiveID() != tt.active || strings.Join(k.IDs(), ",") != strings.Join(tt.ids, ",") {
				t.Fatalf("active %q ids %v, want %q %v", k.ActiveID(), k.IDs(), tt.active, tt.ids)
			}
		})
	}
}

func TestSealOpen(t *testing.T) {
	t.Parallel()
	k := keyring(t, "a", map[string][]byte{"a": key(t)})
	for _, plain := range [][]byte{nil, []byte("x"), []byte("hello, parley"), bytes.Repeat([]byte{7}, 100_000)} {
		s1, err := k.Seal(plain)
		if err != nil {
			t.Fatal(err)
		}
		s2, _ := k.Seal(plain)
		if bytes.Equal(s1, s2) {
			t.Fatal("two seals of the same plaintext are equal: nonce reused")
		}
		if len(plain) > 4 && bytes.Contains(s1, plain) {
			t.Fatal("sealed form contains the plaintext")
		}
		got, err := k.Open(s1)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("round trip: got %d bytes, want %d", len(got), len(plain))
		}
	}
}

func TestRotation(t *testing.T) {
	t.Parallel()
	k1, k2 := key(t), key(t)
	old := keyring(t, "k1", map[string][]byte{"k1": k1})
	sealed, err := old.Seal([]byte("before rotation"))
	if err != nil {
		t.Fatal(err)
	}
	var stream bytes.Buffer
	w, _ := old.SealWriter(&stream)
	io.WriteString(w, "old file")
	w.Close()

	rotated := keyring(t, "k2", map[string][]byte{"k1": k1, "k2": k2})
	got, err := rotated.Open(sealed)
	if err != nil || string(got) != "before rotation" {
		t.Fatalf("open old value after rotation: %q, %v", got, err)
	}
	r, _ := rotated.OpenReader(bytes.NewReader(stream.Bytes()))
	if b, err := io.ReadAll(r); err != nil || string(b) != "old file" {
		t.Fatalf("open old stream after rotation: %q, %v", b, err)
	}
	fresh, _ := rotated.Seal([]byte("after"))
	if _, err := old.Open(fresh); !errors.Is(err, sealer.ErrUnknownKey) {
		t.Fatalf("old keyring opening a k2 value: %v, want ErrUnknownKey", err)
	}

	// Dropping k1 entirely makes old data unreadable with a clear error.
	only2 := keyring(t, "k2", map[string][]byte{"k2": k2})
	if _, err := only2.Open(sealed); !errors.Is(err, sealer.ErrUnknownKey) || !strings.Contains(err.Error(), "k1") {
		t.Fatalf("got %v, want ErrUnknownKey naming k1", err)
	}
}

func TestWrongKeySameID(t *testing.T) {
	t.Parallel()
	a := keyring(t, "k", map[string][]byte{"k": key(t)})
	b := keyring(t, "k", map[string][]byte{"k": key(t)})
	sealed, _ := a.Seal([]byte("secret"))
	if _, err := b.Open(sealed); !errors.Is(err, sealer.ErrAuth) {
		t.Fatalf("got %v, want ErrAuth", err)
	}
	var buf bytes.Buffer
	w, _ := a.SealWriter(&buf)
	io.WriteString(w, "secret file")
	w.Close()
	r, _ := b.OpenReader(&buf)
	if _, err := io.ReadAll(r); !errors.Is(err, sealer.ErrAuth) {
		t.Fatalf("stream: got %v, want ErrAuth", err)
	}
}

func TestTamper(t *testing.T) {
	t.Parallel()
	k := keyring(t, "key1", map[string][]byte{"key1": key(t), "key2": key(t)})
	sealed, _ := k.Seal([]byte("do not change me"))
	for i := range sealed {
		bad := bytes.Clone(sealed)
		bad[i] ^= 0x01
		if _, err := k.Open(bad); err == nil {
			t.Fatalf("flipping byte %d went undetected", i)
		}
	}
	for n := range len(sealed) {
		if _, err := k.Open(sealed[:n]); err == nil {
			t.Fatalf("truncation to %d bytes went undetected", n)
		}
	}
	if _, err := k.Open(append(bytes.Clone(sealed), 0)); err == nil {
		t.Fatal("appended byte went undetected")
	}
}

func TestNilKeyringPassesThrough(t *testing.T) {
	t.Parallel()
	var k *sealer.Keyring
	if k.Enabled() || k.ActiveID() != "" || k.IDs() != nil {
		t.Fatal("nil keyring reports enabled")
	}
	in := []byte("plain")
	if s, err := k.Seal(in); err != nil || !bytes.Equal(s, in) {
		t.Fatalf("Seal: %q, %v", s, err)
	}
	if s, err := k.Open(in); err != nil || !bytes.Equal(s, in) {
		t.Fatalf("Open: %q, %v", s, err)
	}
	var buf bytes.Buffer
	w, err := k.SealWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "plain file")
	w.Close()
	if buf.String() != "plain file" || sealer.IsSealedStream(buf.Bytes()) {
		t.Fatalf("SealWriter wrote %q", buf.String())
	}
	r, _ := k.OpenReader(&buf)
	if b, _ := io.ReadAll(r); string(b) != "plain file" {
		t.Fatalf("OpenReader read %q", b)
	}
}

func sealStream(t testing.TB, k *sealer.Keyring, plain []byte, chunk int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := k.SealWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for p := plain; len(p) > 0; {
		n := min(chunk, len(p))
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("Write after Close succeeded")
	}
	return buf.Bytes()
}

func TestStreamRoundTrip(t *testing.T) {
	t.Parallel()
	k := keyring(t, "a", map[string][]byte{"a": key(t)})
	const seg = sealer.SegmentSize
	sizes := []int{0, 1, 100, seg - 1, seg, seg + 1, 2 * seg, 3*seg + 17}
	for _, size := range sizes {
		for _, chunk := range []int{1 << 20, 4096, 7} {
			if chunk == 7 && size > seg+1 {
				continue // byte-dribbling large inputs only slows the test
			}
			plain := make([]byte, size)
			rand.Read(plain)
			sealed := sealStream(t, k, plain, chunk)
			if !sealer.IsSealedStream(sealed) {
				t.Fatal("IsSealedStream false for a sealed stream")
			}
			r, _ := k.OpenReader(bytes.NewReader(sealed))
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatalf("size %d chunk %d: %v", size, chunk, err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatalf("size %d chunk %d: plaintext differs", size, chunk)
			}
		}
	}
}

func TestStreamDamage(t *testing.T) {
	t.Parallel()
	k := keyring(t, "a", map[string][]byte{"a": key(t)})
	const seg = sealer.SegmentSize
	plain := make([]byte, 3*seg+100)
	rand.Read(plain)
	sealed := sealStream(t, k, plain, 1<<20)
	hdr := len(sealed) - (3*(12+seg+16) + 12 + 100 + 16)
	segAt := func(i int) int { return hdr + i*(12+seg+16) }
	segment := func(i int) []byte { return sealed[segAt(i):min(segAt(i+1), len(sealed))] }

	swapped := bytes.Clone(sealed[:hdr])
	swapped = append(swapped, segment(1)...)
	swapped = append(swapped, segment(0)...)
	swapped = append(swapped, segment(2)...)
	swapped = append(swapped, segment(3)...)

	other := sealStream(t, k, plain, 1<<20) // same key, different stream id
	spliced := bytes.Clone(sealed[:segAt(1)])
	spliced = append(spliced, other[segAt(1):]...)

	flipped := bytes.Clone(sealed)
	flipped[segAt(2)+500] ^= 0x80

	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"cut at segment boundary", sealed[:segAt(3)], sealer.ErrAuth},
		{"cut mid segment", sealed[:segAt(2)+1000], sealer.ErrAuth},
		{"cut last bytes", sealed[:len(sealed)-1], sealer.ErrAuth},
		{"header only", sealed[:hdr], sealer.ErrAuth},
		{"cut in header", sealed[:hdr-3], sealer.ErrMalformed},
		{"empty", nil, sealer.ErrMalformed},
		{"not sealed", []byte("just some plaintext that is long enough"), sealer.ErrMalformed},
		{"appended byte", append(bytes.Clone(sealed), 0), sealer.ErrAuth},
		{"segments reordered", swapped, sealer.ErrAuth},
		{"segments from another stream", spliced, sealer.ErrAuth},
		{"bit flipped", flipped, sealer.ErrAuth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, _ := k.OpenReader(bytes.NewReader(tt.data))
			got, err := io.ReadAll(r)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			// Whatever came out before the error must be genuine.
			if !bytes.HasPrefix(plain, got) {
				t.Fatal("reader returned bytes that are not a prefix of the plaintext")
			}
		})
	}
}

func FuzzOpen(f *testing.F) {
	k, err := sealer.New(sealer.Config{Keys: map[string][]byte{"k": make([]byte, 32)}, Active: "k"})
	if err != nil {
		f.Fatal(err)
	}
	s, _ := k.Seal([]byte("seed"))
	f.Add(s)
	f.Add([]byte{})
	f.Add([]byte{1, 1, 'k'})
	f.Add([]byte{1, 255})
	f.Fuzz(func(t *testing.T, data []byte) {
		plain, err := k.Open(data)
		if err == nil {
			// Anything that opens must re-seal and open to the same bytes.
			again, err := k.Seal(plain)
			if err != nil {
				t.Fatal(err)
			}
			if back, err := k.Open(again); err != nil || !bytes.Equal(back, plain) {
				t.Fatalf("re-seal round trip failed: %v", err)
			}
		}
	})
}

func FuzzOpenReader(f *testing.F) {
	k, err := sealer.New(sealer.Config{Keys: map[string][]byte{"k": make([]byte, 32)}, Active: "k"})
	if err != nil {
		f.Fatal(err)
	}
	var buf bytes.Buffer
	w, _ := k.SealWriter(&buf)
	io.WriteString(w, "seed")
	w.Close()
	f.Add(buf.Bytes())
	f.Add([]byte("\x89PRLS\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, _ := k.OpenReader(bytes.NewReader(data))
		io.Copy(io.Discard, r)
	})
}

func BenchmarkSeal(b *testing.B) {
	k := keyring(b, "a", map[string][]byte{"a": key(b)})
	msg := bytes.Repeat([]byte("m"), 256)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Seal(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStream(b *testing.B) {
	k := keyring(b, "a", map[string][]byte{"a": key(b)})
	plain := make([]byte, 4<<20)
	b.SetBytes(int64(len(plain)))
	b.ReportAllocs()
	for b.Loop() {
		w, _ := k.SealWriter(io.Discard)
		w.Write(plain)
		w.Close()
	}
}
