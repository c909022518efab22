package auth

import (
	"errors"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzVerify feeds arbitrary strings to Verify: it must never panic, every
// failure must wrap one of its sentinels, and a success must carry a
// subject and an expiry.
func FuzzVerify(f *testing.F) {
	v := testVerifier(f)
	iss, err := NewIssuer(IssuerConfig{Secret: testSecret})
	if err != nil {
		f.Fatal(err)
	}
	good, _, _ := iss.Issue("alice", RoleUser)
	f.Add(good)
	f.Add(sign(f, jwt.SigningMethodEdDSA, edPriv, "ed1", goodClaims()))
	f.Add(sign(f, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", goodClaims()))
	f.Add(sign(f, jwt.SigningMethodHS256, otherKey, "", goodClaims()))
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJIUzI1NiJ9..")
	f.Add(strings.Repeat(".", 100))
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(token)
		if err != nil {
			if !errors.Is(err, ErrTokenRequired) && !errors.Is(err, ErrTokenInvalid) && !errors.Is(err, ErrTokenExpired) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		if c.Subject == "" || c.ExpiresAt.IsZero() {
			t.Fatalf("accepted claims without subject or expiry: %+v", c)
		}
	})
}
