package blob_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/parleychat/parley/server/internal/blob"
	"github.com/parleychat/parley/server/internal/sealer"
)

func newKeyring(t testing.TB, active string, keys map[string][]byte) *sealer.Keyring {
	t.Helper()
	k, err := sealer.New(sealer.Config{Keys: keys, Active: active})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func randKey() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

func newStore(t testing.TB, cfg blob.Config) *blob.Store {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	s, err := blob.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func readAll(t testing.TB, s *blob.Store, id string) ([]byte, error) {
	t.Helper()
	rc, err := s.Open(context.Background(), id)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func hexSHA(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// tempFiles lists leftover temp files in dir.
func tempFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPutOpen(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		keys *sealer.Keyring
	}{
		{"plaintext", nil},
		{"sealed", newKeyring(t, "k1", map[string][]byte{"k1": randKey()})},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := newStore(t, blob.Config{Dir: dir, Sealer: tt.keys})
			for _, size := range []int{0, 1, 1000, sealer.SegmentSize + 3, 300_000} {
				content := bytes.Repeat([]byte("parley file content "), size/20+1)[:size]
				// One-byte reads exercise the copy loop and the sealer's buffering.
				id, n, err := s.Put(context.Background(), iotest.OneByteReader(bytes.NewReader(content)))
				if err != nil {
					t.Fatal(err)
				}
				if id != hexSHA(content) || n != int64(size) {
					t.Fatalf("Put = %s, %d; want %s, %d", id, n, hexSHA(content), size)
				}
				if !s.Has(id) {
					t.Fatal("Has = false after Put")
				}
				onDisk, err := os.ReadFile(filepath.Join(dir, id[:2], id))
				if err != nil {
					t.Fatal(err)
				}
				if sealed := tt.keys.Enabled(); sealed != sealer.IsSealedStream(onDisk) ||
					(sealed && size > 20 && bytes.Contains(onDisk, content[:20])) {
					t.Fatalf("on-disk form wrong for sealed=%v", sealed)
				}
				got, err := readAll(t, s, id)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, content) {
					t.Fatal("content differs")
				}
			}
			if left := tempFiles(t, dir); len(left) != 0 {
				t.Fatalf("temp files left: %v", left)
			}
		})
	}
}

func TestSameContentSameID(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newStore(t, blob.Config{Dir: dir, Sealer: newKeyring(t, "k", map[string][]byte{"k": randKey()})})
	content := []byte("the same bytes")
	var wg sync.WaitGroup
	ids := make([]string, 8)
	errs := make([]error, 8)
	for i := range ids {
		wg.Go(func() { ids[i], _, errs[i] = s.Put(context.Background(), bytes.NewReader(content)) })
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("put %d: %s, %v", i, ids[i], errs[i])
		}
	}
	entries, _ := os.ReadDir(filepath.Join(dir, ids[0][:2]))
	if len(entries) != 1 {
		t.Fatalf("%d files for one content", len(entries))
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
}

func TestMaxSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		max     int64
		size    int
		wantErr error
	}{
		{"below", 100, 99, nil},
		{"exactly", 100, 100, nil},
		{"one over", 100, 101, blob.ErrTooLarge},
		{"far over", 100, 1 << 20, blob.ErrTooLarge},
		{"default allows 10MiB", 0, blob.DefaultMaxSize, nil},
		{"default refuses more", 0, blob.DefaultMaxSize + 1, blob.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := newStore(t, blob.Config{Dir: dir, MaxSize: tt.max})
			content := make([]byte, tt.size)
			id, n, err := s.Put(context.Background(), bytes.NewReader(content))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Put err = %v, want %v", err, tt.wantErr)
			}
			if err == nil && (n != int64(tt.size) || !s.Has(id)) {
				t.Fatalf("Put = %s, %d", id, n)
			}
			if err != nil && s.Has(hexSHA(content)) {
				t.Fatal("refused content was stored")
			}
			if left := tempFiles(t, dir); len(left) != 0 {
				t.Fatalf("temp files left: %v", left)
			}
		})
	}
}

func TestBadIDs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A file outside the store that a traversal would reach.
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("secret"), 0o600)
	s := newStore(t, blob.Config{Dir: filepath.Join(dir, "blobs")})
	good := hexSHA([]byte("x"))
	for _, id := range []string{
		"",
		"../secret",
		"../../secret",
		"/etc/passwd",
		strings.Repeat("a", 63),
		strings.Repeat("a", 65),
		strings.ToUpper(good),
		good[:62] + "/.",
		"ab/../../secret" + strings.Repeat("0", 49),
		good[:63] + "g",
		good[:63] + "\x00",
	} {
		if s.Has(id) {
			t.Errorf("Has(%q) = true", id)
		}
		if _, err := s.Open(context.Background(), id); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Open(%q) = %v, want ErrNotFound", id, err)
		}
	}
	if _, err := s.Open(context.Background(), good); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Open(absent) = %v, want ErrNotFound", err)
	}
}

func TestKeyChanges(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	k1, k2 := randKey(), randKey()
	plain := newStore(t, blob.Config{Dir: dir})
	legacy, _, err := plain.Put(context.Background(), strings.NewReader("stored before encryption"))
	if err != nil {
		t.Fatal(err)
	}
	v1 := newStore(t, blob.Config{Dir: dir, Sealer: newKeyring(t, "k1", map[string][]byte{"k1": k1})})
	sealedID, _, err := v1.Put(context.Background(), strings.NewReader("sealed under k1"))
	if err != nil {
		t.Fatal(err)
	}

	rotated := newStore(t, blob.Config{Dir: dir, Sealer: newKeyring(t, "k2", map[string][]byte{"k1": k1, "k2": k2})})
	for id, want := range map[string]string{legacy: "stored before encryption", sealedID: "sealed under k1"} {
		got, err := readAll(t, rotated, id)
		if err != nil || string(got) != want {
			t.Fatalf("after rotation: %q, %v; want %q", got, err, want)
		}
	}

	if _, err := plain.Open(context.Background(), sealedID); err == nil || errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("opening a sealed blob without a key: %v, want a clear error", err)
	}
	onlyK2 := newStore(t, blob.Config{Dir: dir, Sealer: newKeyring(t, "k2", map[string][]byte{"k2": k2})})
	if _, err := readAll(t, onlyK2, sealedID); !errors.Is(err, sealer.ErrUnknownKey) {
		t.Fatalf("opening with the key dropped: %v, want ErrUnknownKey", err)
	}
}

func TestCorruption(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		keys *sealer.Keyring
		want error
	}{
		{"plaintext", nil, blob.ErrCorrupt},
		{"sealed", newKeyring(t, "k", map[string][]byte{"k": randKey()}), sealer.ErrAuth},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := newStore(t, blob.Config{Dir: dir, Sealer: tt.keys})
			id, _, err := s.Put(context.Background(), strings.NewReader("some content to damage"))
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, id[:2], id)
			b, _ := os.ReadFile(p)
			b[len(b)-1] ^= 1
			os.WriteFile(p, b, 0o600)
			if _, err := readAll(t, s, id); !errors.Is(err, tt.want) {
				t.Fatalf("read damaged blob: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestContextCancelled(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newStore(t, blob.Config{Dir: dir})
	ctx, cancel := context.WithCancel(context.Background())
	// Cancel part way through the upload.
	r := io.MultiReader(strings.NewReader("first part"), readerFunc(func([]byte) (int, error) {
		cancel()
		return 0, nil
	}), strings.NewReader("second part"))
	if _, _, err := s.Put(ctx, r); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put = %v, want context.Canceled", err)
	}
	if _, err := s.Open(ctx, hexSHA(nil)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Open = %v, want context.Canceled", err)
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
}

func TestReaderErrorLeavesNothing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newStore(t, blob.Config{Dir: dir})
	boom := errors.New("connection reset")
	r := io.MultiReader(strings.NewReader("partial"), iotest.ErrReader(boom))
	if _, _, err := s.Put(context.Background(), r); !errors.Is(err, boom) {
		t.Fatalf("Put = %v, want %v", err, boom)
	}
	if s.Has(hexSHA([]byte("partial"))) || len(tempFiles(t, dir)) != 0 {
		t.Fatal("a failed upload left a file behind")
	}
}

func TestNewRemovesStaleTemps(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	stale, fresh := filepath.Join(dir, ".tmp-stale"), filepath.Join(dir, ".tmp-fresh")
	os.WriteFile(stale, nil, 0o600)
	os.WriteFile(fresh, nil, 0o600)
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(stale, old, old)
	newStore(t, blob.Config{Dir: dir})
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("stale temp file kept")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Fatal("fresh temp file (maybe an upload in flight) removed")
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	if _, err := blob.New(blob.Config{}); err == nil {
		t.Fatal("New without Dir succeeded")
	}
	if _, err := blob.New(blob.Config{Dir: t.TempDir(), MaxSize: -1}); err == nil {
		t.Fatal("New with negative MaxSize succeeded")
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func BenchmarkPut(b *testing.B) {
	for _, tt := range []struct {
		name string
		keys *sealer.Keyring
	}{
		{"plaintext", nil},
		{"sealed", newKeyring(b, "k", map[string][]byte{"k": randKey()})},
	} {
		b.Run(tt.name, func(b *testing.B) {
			s := newStore(b, blob.Config{Dir: b.TempDir(), Sealer: tt.keys})
			content := make([]byte, 1<<20)
			b.SetBytes(int64(len(content)))
			for b.Loop() {
				rand.Read(content[:32]) // new content, new file, every time
				if _, _, err := s.Put(context.Background(), bytes.NewReader(content)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
