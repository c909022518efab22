package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

var (
	testSecret = []byte("0123456789abcdef0123456789abcdef")
	otherKey   = []byte("fedcba9876543210fedcba9876543210")
	rsaKey     = sync.OnceValue(func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return k
	})
	edPub, edPriv, _ = ed25519.GenerateKey(rand.Reader)
)

func testVerifier(t testing.TB) *Verifier {
	t.Helper()
	v, err := NewVerifier(VerifierConfig{
		HMACSecret: testSecret,
		PublicKeys: map[string]crypto.PublicKey{"rsa1": &rsaKey().PublicKey, "ed1": edPub},
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// sign builds a token with the given method, key and claims; kid is set
// when not empty.
func sign(t testing.TB, m jwt.SigningMethod, key any, kid string, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func goodClaims() jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"sub": "alice", "role": "moderator", "iss": DefaultIssuer, "aud": DefaultAudience,
		"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": "x",
	}
}

func with(c jwt.MapClaims, k string, v any) jwt.MapClaims {
	c[k] = v
	if v == nil {
		delete(c, k)
	}
	return c
}

func TestRole(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		role  Role
		proto chatv1.Role
	}{
		{"user", RoleUser, chatv1.Role_ROLE_USER},
		{"moderator", RoleModerator, chatv1.Role_ROLE_MODERATOR},
		{"admin", RoleAdmin, chatv1.Role_ROLE_ADMIN},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := ParseRole(tc.name)
			if err != nil || r != tc.role || r.String() != tc.name {
				t.Fatalf("ParseRole(%q) = %v, %v", tc.name, r, err)
			}
			if r.Proto() != tc.proto || RoleFromProto(tc.proto) != r {
				t.Fatalf("proto round trip of %v failed", r)
			}
		})
	}
	if _, err := ParseRole("root"); err == nil {
		t.Fatal("ParseRole(root) succeeded")
	}
	if RoleFromProto(chatv1.Role_ROLE_UNSPECIFIED) != 0 || Role(0).Proto() != chatv1.Role_ROLE_UNSPECIFIED {
		t.Fatal("unspecified does not map to zero")
	}
}

func TestRoleAtLeast(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		r, min Role
		want   bool
	}{
		{RoleUser, RoleUser, true},
		{RoleUser, RoleModerator, false},
		{RoleModerator, RoleUser, true},
		{RoleModerator, RoleAdmin, false},
		{RoleAdmin, RoleAdmin, true},
		{0, 0, false}, // the zero Role is granted nothing
		{0, RoleUser, false},
		{Role(9), RoleUser, false},
		{Role(-1), 0, false},
	} {
		if got := tc.r.AtLeast(tc.min); got != tc.want {
			t.Errorf("%v.AtLeast(%v) = %v, want %v", tc.r, tc.min, got, tc.want)
		}
	}
}

func TestPrincipal(t *testing.T) {
	t.Parallel()
	p := &Principal{Username: "alice", Role: RoleUser}
	if !p.ExpiresAt().IsZero() {
		t.Fatal("unset expiry is not zero")
	}
	exp := time.Unix(1_900_000_000, 0)
	p.SetExpiresAt(exp)
	if !p.ExpiresAt().Equal(exp) {
		t.Fatalf("ExpiresAt = %v, want %v", p.ExpiresAt(), exp)
	}
	// Concurrent refresh and read, for the race detector.
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 100 {
				p.SetExpiresAt(exp.Add(time.Duration(i*j) * time.Second))
				_ = p.ExpiresAt()
			}
		})
	}
	wg.Wait()

	ctx := NewContext(context.Background(), p)
	if got, ok := FromContext(ctx); !ok || got != p {
		t.Fatal("FromContext did not return the principal")
	}
	if _, ok := FromContext(context.Background()); ok {
		t.Fatal("FromContext found a principal in an empty context")
	}
}

func TestIssueVerify(t *testing.T) {
	t.Parallel()
	iss, err := NewIssuer(IssuerConfig{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	tok, exp, err := iss.Issue("alice", RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(exp); d < 14*time.Minute || d > 15*time.Minute {
		t.Fatalf("expiry in %s, want about 15m", d)
	}
	c, err := testVerifier(t).Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "alice" || c.Role != RoleAdmin || !c.ExpiresAt.Equal(exp) {
		t.Fatalf("claims = %+v, want alice/admin/%v", c, exp)
	}
	// Every token has its own jti.
	tok2, _, _ := iss.Issue("alice", RoleAdmin)
	if tok == tok2 {
		t.Fatal("two tokens are identical")
	}
	if _, _, err := iss.Issue("", RoleUser); err == nil {
		t.Fatal("issued a token without a subject")
	}
	if _, _, err := iss.Issue("bob", 0); err == nil {
		t.Fatal("issued a token without a role")
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	v := testVerifier(t)
	now := time.Now()
	good := sign(t, jwt.SigningMethodHS256, testSecret, "", goodClaims())

	// An HS256 token whose header says RS256 (signature unchanged).
	parts := strings.Split(good, ".")
	rsHeader := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","kid":"rsa1","typ":"JWT"}`))
	algSwapped := rsHeader + "." + parts[1] + "." + parts[2]
	// The classic confusion: HS256 signed with the public key's bytes.
	pubDER, _ := x509.MarshalPKIXPublicKey(&rsaKey().PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	confused := sign(t, jwt.SigningMethodHS256, pubPEM, "rsa1", goodClaims())
	noneTok := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", goodClaims())

	for _, tc := range []struct {
		name  string
		token string
		want  error // nil for success
	}{
		{"empty", "", ErrTokenRequired},
		{"garbage", "not.a.jwt", ErrTokenInvalid},
		{"too long", strings.Repeat("a", DefaultMaxTokenBytes+1), ErrTokenInvalid},
		{"valid HS256", good, nil},
		{"alg none", noneTok, ErrTokenInvalid},
		{"HS256 wrong key", sign(t, jwt.SigningMethodHS256, otherKey, "", goodClaims()), ErrTokenInvalid},
		{"HS384 refused", sign(t, jwt.SigningMethodHS384, testSecret, "", goodClaims()), ErrTokenInvalid},
		{"alg header swapped", algSwapped, ErrTokenInvalid},
		{"HS256 with public key as secret", confused, ErrTokenInvalid},
		{"valid RS256", sign(t, jwt.SigningMethodRS256, rsaKey(), "rsa1", goodClaims()), nil},
		{"valid EdDSA", sign(t, jwt.SigningMethodEdDSA, edPriv, "ed1", goodClaims()), nil},
		{"RS256 unknown kid", sign(t, jwt.SigningMethodRS256, rsaKey(), "nope", goodClaims()), ErrTokenInvalid},
		{"RS256 no kid", sign(t, jwt.SigningMethodRS256, rsaKey(), "", goodClaims()), ErrTokenInvalid},
		{"RS256 kid of an Ed25519 key", sign(t, jwt.SigningMethodRS256, rsaKey(), "ed1", goodClaims()), ErrTokenInvalid},
		{"EdDSA kid of an RSA key", sign(t, jwt.SigningMethodEdDSA, edPriv, "rsa1", goodClaims()), ErrTokenInvalid},
		{"PS256 refused", sign(t, jwt.SigningMethodPS256, rsaKey(), "rsa1", goodClaims()), ErrTokenInvalid},
		{"expired", sign(t, jwt.SigningMethodHS256, testSecret, "", with(goodClaims(), "exp", now.Add(-time.Minute).Unix())), ErrTokenExpired},
		{"expired within leeway", sign(t, jwt.SigningMethodHS256, testSecret, "", with(goodClaims(), "exp", now.Add(-10*time.Second).Unix())), nil},
		{"expired and wrong issuer", sign(t, jwt.SigningMethodHS256, testSecret, "", with(with(goodClaims(), "exp", now.Add(-time.Hour).Unix()), "iss", "evil")), ErrTokenInvalid},
		{"expired wrong key", sign(t, jwt.SigningMethodHS256, otherKey, "", with(goodClaims(), "exp", now.Add(-time.Hour).Unix())), ErrTokenInvalid},
		{"no exp", sign(t, jwt.SigningMethodHS256, testSecret, "", with(goodClaims(), "exp", nil)), ErrTokenInvalid},
		{"wrong issuer", sign(t, jwt.SigningMethodHS256, testSecret, "", with(goodClaims(), "iss", "evil")), ErrTokenInvalid},
		{"no issuer", sign(t, jwt.SigningMethodHS256, testSecret, "", with(goodClaims(), "iss", nil)), ErrTokenInvalid},
		{"wrong audience", sign(t, jwt.SigningMethodHS256, testSecret, "", with(goodClaims(), "aud", "other")), ErrTokenInvalid},
		{"audience list", sign(t, jwt.SigningMethodHS256, testSecret, "", with(goodClaims(), "aud", []string{"other", DefaultAudience})), nil},
		{"no subject", sign(t, jwt.SigningMethodHS256, testSecret, "", with(goodClaims(), "sub", nil)), ErrTokenInvalid},
		{"not valid yet", sign(t, jwt.SigningMethodHS256, testSecret, "", with(goodClaims(), "nbf", now.Add(time.Hour).Unix())), ErrTokenInvalid},
		{"issued in the future", sign(t, jwt.SigningMethodHS256, testSecret, "", with(goodClaims(), "iat", now.Add(time.Hour).Unix())), ErrTokenInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := v.Verify(tc.token)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if c.Subject != "alice" || c.Role != RoleModerator {
					t.Fatalf("claims = %+v", c)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify error = %v, want %v", err, tc.want)
			}
			if tc.token != "" && strings.Contains(err.Error(), tc.token) {
				t.Fatal("error text contains the token")
			}
		})
	}
}

func TestVerifierKeyKinds(t *testing.T) {
	t.Parallel()
	// A verifier with only public keys refuses HS256 even when signed with
	// bytes an attacker could know.
	v, err := NewVerifier(VerifierConfig{PublicKeys: map[string]crypto.PublicKey{"ed1": edPub}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, []byte(edPub), "ed1", goodClaims())); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("HS256 on a public-key verifier: %v", err)
	}
	// A verifier with only a secret refuses RS256 with any kid.
	v, err = NewVerifier(VerifierConfig{HMACSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(sign(t, jwt.SigningMethodRS256, rsaKey(), "rsa1", goodClaims())); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("RS256 on a secret-only verifier: %v", err)
	}
}

func TestNewVerifierConfig(t *testing.T) {
	t.Parallel()
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name string
		cfg  VerifierConfig
	}{
		{"nothing", VerifierConfig{}},
		{"short secret", VerifierConfig{HMACSecret: []byte("short")}},
		{"small RSA key", VerifierConfig{PublicKeys: map[string]crypto.PublicKey{"k": &small.PublicKey}}},
		{"ECDSA key", VerifierConfig{PublicKeys: map[string]crypto.PublicKey{"k": &ec.PublicKey}}},
		{"private key", VerifierConfig{PublicKeys: map[string]crypto.PublicKey{"k": edPriv}}},
		{"empty kid", VerifierConfig{PublicKeys: map[string]crypto.PublicKey{"": edPub}}},
	} {
		if _, err := NewVerifier(tc.cfg); err == nil {
			t.Errorf("%s: NewVerifier succeeded", tc.name)
		}
	}
	if _, err := NewIssuer(IssuerConfig{Secret: []byte("short")}); err == nil {
		t.Error("NewIssuer accepted a short secret")
	}
}

func TestPasswords(t *testing.T) {
	t.Parallel()
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q is not the expected PHC form", h)
	}
	h2, _ := HashPassword("correct horse")
	if h == h2 {
		t.Fatal("two hashes of one password are equal: salt not random")
	}
	bc, err := bcrypt.GenerateFromPassword([]byte("legacy pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, encoded, pw string
		want              bool
	}{
		{"argon2id match", h, "correct horse", true},
		{"argon2id mismatch", h, "correct horse!", false},
		{"argon2id empty", h, "", false},
		{"bcrypt match", string(bc), "legacy pw", true},
		{"bcrypt mismatch", string(bc), "legacy", false},
		{"empty encoding", "", "", false},
		{"plaintext stored", "correct horse", "correct horse", false},
		{"argon2i refused", strings.Replace(h, "argon2id", "argon2i", 1), "correct horse", false},
		{"huge memory refused", strings.Replace(h, "m=19456", "m=4194304", 1), "correct horse", false},
		{"zero time refused", strings.Replace(h, "t=2", "t=0", 1), "correct horse", false},
		{"bad version", strings.Replace(h, "v=19", "v=16", 1), "correct horse", false},
		{"truncated", h[:len(h)-10], "correct horse", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := CheckPassword(tc.encoded, tc.pw); got != tc.want {
				t.Fatalf("CheckPassword = %v, want %v", got, tc.want)
			}
		})
	}
	if NeedsRehash(h) {
		t.Error("a fresh hash needs rehashing")
	}
	if !NeedsRehash(string(bc)) || !NeedsRehash(strings.Replace(h, "t=2", "t=1", 1)) {
		t.Error("bcrypt or old parameters do not need rehashing")
	}
}

func TestRefreshTokenAndSecret(t *testing.T) {
	t.Parallel()
	tok, hash, err := NewRefreshToken()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(raw) != 32 {
		t.Fatalf("token %q is not 32 bytes of base64url: %v", tok, err)
	}
	if hash != HashRefreshToken(tok) || len(hash) != 64 {
		t.Fatalf("hash %q does not match HashRefreshToken", hash)
	}
	tok2, _, _ := NewRefreshToken()
	if tok == tok2 {
		t.Fatal("two refresh tokens are equal")
	}
	s, err := GenerateSecret()
	if err != nil || len(s) != 32 {
		t.Fatalf("GenerateSecret = %d bytes, %v", len(s), err)
	}
	if _, err := NewIssuer(IssuerConfig{Secret: s}); err != nil {
		t.Fatalf("a generated secret is refused: %v", err)
	}
}

func TestLoadPublicKeys(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rsaDER, _ := x509.MarshalPKIXPublicKey(&rsaKey().PublicKey)
	edDER, _ := x509.MarshalPKIXPublicKey(edPub)
	write("idp-rsa.pem", "PUBLIC KEY", rsaDER)
	write("idp-ed.pem", "PUBLIC KEY", edDER)
	pkcs1 := filepath.Join(t.TempDir(), "legacy.pem")
	if err := os.WriteFile(pkcs1, pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey().PublicKey)}), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := LoadPublicKeys(dir, pkcs1)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 || keys["idp-rsa"] == nil || keys["idp-ed"] == nil || keys["legacy"] == nil {
		t.Fatalf("keys = %v", keys)
	}
	if _, err := NewVerifier(VerifierConfig{PublicKeys: keys}); err != nil {
		t.Fatal(err)
	}
	bad := write("bad.pem", "PRIVATE KEY", []byte("x"))
	if _, err := LoadPublicKeys(bad); err == nil {
		t.Fatal("loaded a private key block")
	}
}

func BenchmarkVerifyHS256(b *testing.B) {
	v := testVerifier(b)
	iss, _ := NewIssuer(IssuerConfig{Secret: testSecret})
	tok, _, _ := iss.Issue("alice", RoleUser)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHashPassword(b *testing.B) {
	for b.Loop() {
		if _, err := HashPassword("correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
}
