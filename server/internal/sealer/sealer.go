// Package sealer owns at-rest encryption: AES-256-GCM under a keyring of
// named keys, one of which is active for sealing while the others stay
// available for opening, so keys can be rotated without rewriting old data.
//
// It has two forms. Seal/Open handle small values (message text) in one
// piece. SealWriter/OpenReader handle files as a stream of independently
// authenticated segments so neither side holds a whole file in memory.
//
// Concurrency: a *Keyring is immutable after New and all its methods are
// safe for concurrent use. The io.WriteCloser and io.Reader returned by
// SealWriter and OpenReader are not; each belongs to one goroutine.
//
// A nil *Keyring means "encryption off": its methods pass data through
// unchanged and Enabled reports false, so callers can hold one field and
// never branch on whether a key was configured.
package sealer

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// KeySize is the length of every key: AES-256.
const KeySize = 32

const (
	// versionValue tags the one-piece sealed form. It is a byte of its own
	// so the format can change later without guessing.
	versionValue = 0x01
	nonceSize    = 12
	tagSize      = 16
	maxIDLen     = 255
)

var (
	// ErrUnknownKey is returned when sealed data names a key id the keyring
	// does not hold (for example after a key was dropped too early).
	ErrUnknownKey = errors.New("sealer: unknown key id")
	// ErrMalformed is returned when sealed data is not in a format this
	// package wrote (wrong version, cut short, garbage).
	ErrMalformed = errors.New("sealer: malformed sealed data")
	// ErrAuth is returned when authentication fails: the data was altered,
	// truncated, reordered or sealed under a different key with the same id.
	ErrAuth = errors.New("sealer: authentication failed")
)

// Config configures a Keyring.
type Config struct {
	// Keys maps a key id to its 32-byte key. Ids are 1..255 bytes and may
	// not contain ',' or ':' (the separators of ParseKeys). Required.
	Keys map[string][]byte
	// Active is the id of the key used to seal. Required; must be in Keys.
	Active string
}

// Keyring holds the keys. The zero value is not usable; use New or
// ParseKeys. A nil *Keyring disables encryption (see the package doc).
type Keyring struct {
	active string
	aeads  map[string]cipher.AEAD
}

// New builds a keyring from cfg. The key bytes are copied into AES
// ciphers; cfg may be reused or wiped afterwards.
func New(cfg Config) (*Keyring, error) {
	if len(cfg.Keys) == 0 {
		return nil, errors.New("sealer: no keys")
	}
	if _, ok := cfg.Keys[cfg.Active]; !ok {
		return nil, fmt.Errorf("sealer: active key %q is not in the keyring", cfg.Active)
	}
	k := &Keyring{active: cfg.Active, aeads: make(map[string]cipher.AEAD, len(cfg.Keys))}
	for id, key := range cfg.Keys {
		if err := checkID(id); err != nil {
			return nil, err
		}
		if len(key) != KeySize {
			// Never print the key itself, only its length.
			return nil, fmt.Errorf("sealer: key %q is %d bytes, want %d", id, len(key), KeySize)
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("sealer: key %q: %w", id, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("sealer: key %q: %w", id, err)
		}
		k.aeads[id] = aead
	}
	return k, nil
}

func checkID(id string) error {
	if id == "" || len(id) > maxIDLen || strings.ContainsAny(id, ",:") {
		return fmt.Errorf("sealer: bad key id %q: want 1..%d bytes without ',' or ':'", id, maxIDLen)
	}
	return nil
}

// ParseKeys parses a key spec "id1:BASE64KEY,id2:BASE64KEY" as an operator
// would pass it in an environment variable. The first entry is the active
// key; the rest are kept for opening data sealed before a rotation. Keys
// may be in standard or URL-safe base64, padded or not. An empty (or
// all-space) spec returns nil, nil: encryption off.
func ParseKeys(spec string) (*Keyring, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, nil
	}
	cfg := Config{Keys: map[string][]byte{}}
	for i, entry := range strings.Split(spec, ",") {
		id, b64, ok := strings.Cut(strings.TrimSpace(entry), ":")
		id, b64 = strings.TrimSpace(id), strings.TrimSpace(b64)
		if !ok || id == "" || b64 == "" {
			return nil, fmt.Errorf("sealer: key spec entry %d: want id:base64key", i+1)
		}
		if _, dup := cfg.Keys[id]; dup {
			return nil, fmt.Errorf("sealer: key id %q appears twice", id)
		}
		key, err := decodeKey(b64)
		if err != nil {
			// The decoder's error can quote input bytes; keep key material
			// out of logs by reporting only which entry failed.
			return nil, fmt.Errorf("sealer: key %q: not valid base64", id)
		}
		cfg.Keys[id] = key
		if i == 0 {
			cfg.Active = id
		}
	}
	return New(cfg)
}

func decodeKey(s string) ([]byte, error) {
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		var b []byte
		if b, err = enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, err
}

// Enabled reports whether k encrypts. It is false for a nil keyring.
func (k *Keyring) Enabled() bool { return k != nil }

// ActiveID returns the id of the key used for sealing ("" when disabled).
func (k *Keyring) ActiveID() string {
	if k == nil {
		return ""
	}
	return k.active
}

// IDs returns the ids of all keys held, sorted.
func (k *Keyring) IDs() []string {
	if k == nil {
		return nil
	}
	ids := make([]string, 0, len(k.aeads))
	for id := range k.aeads {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Seal encrypts plain under the active key with a fresh random nonce.
//
// The sealed form is: version(1) | len(id)(1) | id | nonce(12) |
// ciphertext+tag(16). The header is authenticated as additional data, so
// swapping the key id or version is detected. On a nil keyring Seal returns
// plain itself.
func (k *Keyring) Seal(plain []byte) ([]byte, error) {
	if k == nil {
		return plain, nil
	}
	aead := k.aeads[k.active]
	hdrLen := 2 + len(k.active)
	out := make([]byte, hdrLen+nonceSize, hdrLen+nonceSize+len(plain)+tagSize)
	out[0] = versionValue
	out[1] = byte(len(k.active))
	copy(out[2:], k.active)
	nonce := out[hdrLen : hdrLen+nonceSize]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("sealer: nonce: %w", err)
	}
	return aead.Seal(out, nonce, plain, out[:hdrLen]), nil
}

// Open decrypts data produced by Seal with any key in the keyring. It
// returns ErrMalformed, ErrUnknownKey or ErrAuth (wrapped) on failure. On a
// nil keyring Open returns sealed itself: callers that may hold sealed data
// must check Enabled first.
func (k *Keyring) Open(sealed []byte) ([]byte, error) {
	if k == nil {
		return sealed, nil
	}
	if len(sealed) < 2 || sealed[0] != versionValue {
		return nil, ErrMalformed
	}
	hdrLen := 2 + int(sealed[1])
	if sealed[1] == 0 || len(sealed) < hdrLen+nonceSize+tagSize {
		return nil, ErrMalformed
	}
	id := string(sealed[2:hdrLen])
	aead, ok := k.aeads[id]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownKey, id)
	}
	nonce := sealed[hdrLen : hdrLen+nonceSize]
	plain, err := aead.Open(nil, nonce, sealed[hdrLen+nonceSize:], sealed[:hdrLen])
	if err != nil {
		return nil, fmt.Errorf("%w (key %q)", ErrAuth, id)
	}
	return plain, nil
}
