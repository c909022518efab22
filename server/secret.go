package server

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/parleychat/parley/server/internal/auth"
)

// LoadOrCreateSecret returns the HS256 secret kept in dir, creating a
// random one on first use; it is never a well-known default.
func LoadOrCreateSecret(dir string) ([]byte, error) {
	path := filepath.Join(dir, "jwt.secret")
	b, err := os.ReadFile(path)
	if err == nil {
		secret, err := DecodeSecret(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return secret, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	secret, err := auth.GenerateSecret()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) { // another process won the race
			return LoadOrCreateSecret(dir)
		}
		return nil, err
	}
	if _, err := f.WriteString(hex.EncodeToString(secret) + "\n"); err != nil {
		f.Close()
		return nil, err
	}
	return secret, f.Close()
}

// DecodeSecret parses a hex-encoded secret of at least 32 bytes.
func DecodeSecret(b []byte) ([]byte, error) {
	secret, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(secret) < 32 {
		return nil, errors.New("not a hex secret of at least 32 bytes")
	}
	return secret, nil
}
