package auth

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// LoadPublicKeys reads PEM public keys for VerifierConfig.PublicKeys. Each
// path is a PEM file or a directory whose *.pem files are read (not
// recursively). A key's kid is its file name without the extension, so
// "idp-2026.pem" holds kid "idp-2026". Blocks of type "PUBLIC KEY" (PKIX:
// RSA or Ed25519) and "RSA PUBLIC KEY" (PKCS #1) are accepted; a file must
// hold exactly one key.
func LoadPublicKeys(paths ...string) (map[string]crypto.PublicKey, error) {
	keys := make(map[string]crypto.PublicKey)
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
		files := []string{p}
		if fi.IsDir() {
			if files, err = filepath.Glob(filepath.Join(p, "*.pem")); err != nil {
				return nil, fmt.Errorf("auth: %w", err)
			}
		}
		for _, f := range files {
			kid := strings.TrimSuffix(filepath.Base(f), filepath.Ext(f))
			if _, dup := keys[kid]; dup {
				return nil, fmt.Errorf("auth: two public keys with kid %q", kid)
			}
			k, err := loadPublicKey(f)
			if err != nil {
				return nil, fmt.Errorf("auth: %s: %w", f, err)
			}
			keys[kid] = k
		}
	}
	return keys, nil
}

func loadPublicKey(file string) (crypto.PublicKey, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if more, _ := pem.Decode(rest); more != nil {
		return nil, errors.New("more than one PEM block")
	}
	var k crypto.PublicKey
	switch block.Type {
	case "PUBLIC KEY":
		k, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		k, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a public key", block.Type)
	}
	if err != nil {
		return nil, err
	}
	if err := checkPublicKey(k); err != nil {
		return nil, err
	}
	return k, nil
}
