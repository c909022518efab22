package auth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Sentinel errors. Verify wraps the cause in one of the first three; the
// interceptor turns each into its own Unauthenticated message.
var (
	// ErrTokenRequired means no token was presented.
	ErrTokenRequired = errors.New("token required")
	// ErrTokenInvalid means the token is malformed, badly signed, or its
	// claims (issuer, audience, subject) are wrong.
	ErrTokenInvalid = errors.New("invalid token")
	// ErrTokenExpired means the token was valid but its exp has passed.
	ErrTokenExpired = errors.New("token expired")
	// ErrAccountDeactivated means the token is good but the account is not
	// active. Verify never returns it; the interceptor does, after it looks
	// the user up.
	ErrAccountDeactivated = errors.New("account deactivated")
)

// Defaults for IssuerConfig and VerifierConfig.
const (
	DefaultIssuer        = "parley"
	DefaultAudience      = "parley"
	DefaultTTL           = 15 * time.Minute
	DefaultLeeway        = 30 * time.Second
	DefaultMaxTokenBytes = 4096
	// MinSecretBytes is the shortest HMAC secret accepted: RFC 7518 §3.2
	// asks for a key at least as long as the HS256 hash.
	MinSecretBytes = 32
	// minRSABits refuses public keys too short to trust.
	minRSABits = 2048
)

// claims is the JWT body Parley issues and reads.
type claims struct {
	Role string `json:"role,omitempty"`
	jwt.RegisteredClaims
}

// Claims are what Verify vouches for.
type Claims struct {
	Subject string
	// Role is the token's role claim, or zero when it is absent or not one
	// of Parley's (an external identity provider's token may carry none).
	// Authorization uses the stored role, not this.
	Role      Role
	ExpiresAt time.Time
}

// IssuerConfig configures an Issuer. Zero fields take the defaults.
type IssuerConfig struct {
	// Secret is the HS256 key, at least MinSecretBytes long. Required.
	Secret []byte
	// Issuer is the iss claim; default DefaultIssuer.
	Issuer string
	// Audience is the aud claim; default DefaultAudience.
	Audience string
	// TTL is how long an access token lives; default DefaultTTL (15m).
	TTL time.Duration
}

// Issuer signs access tokens with HS256. Safe for concurrent use.
type Issuer struct {
	secret   []byte
	issuer   string
	audience string
	ttl      time.Duration
	now      func() time.Time // tests move the clock
}

// NewIssuer checks cfg and returns an Issuer.
func NewIssuer(cfg IssuerConfig) (*Issuer, error) {
	if len(cfg.Secret) < MinSecretBytes {
		return nil, fmt.Errorf("auth: issuer secret must be at least %d bytes, got %d", MinSecretBytes, len(cfg.Secret))
	}
	if cfg.TTL < 0 {
		return nil, fmt.Errorf("auth: negative token TTL %s", cfg.TTL)
	}
	iss := &Issuer{
		// Copy, so a caller that reuses its slice cannot change our key.
		secret:   append([]byte(nil), cfg.Secret...),
		issuer:   orDefault(cfg.Issuer, DefaultIssuer),
		audience: orDefault(cfg.Audience, DefaultAudience),
		ttl:      cfg.TTL,
		now:      time.Now,
	}
	if iss.ttl == 0 {
		iss.ttl = DefaultTTL
	}
	return iss, nil
}

// Issue signs an access token for username with role. The returned expiry
// is the token's exp, truncated to the second as JWT stores it.
func (i *Issuer) Issue(username string, role Role) (token string, expiresAt time.Time, err error) {
	if username == "" {
		return "", time.Time{}, errors.New("auth: issue: empty username")
	}
	if !role.AtLeast(RoleUser) {
		return "", time.Time{}, fmt.Errorf("auth: issue: invalid role %s", role)
	}
	jti, err := randomID()
	if err != nil {
		return "", time.Time{}, err
	}
	now := i.now().Truncate(time.Second)
	exp := now.Add(i.ttl)
	c := claims{
		Role: role.String(),
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   username,
			Issuer:    i.issuer,
			Audience:  jwt.ClaimStrings{i.audience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
			ID:        jti,
		},
	}
	token, err = jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(i.secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("auth: sign token: %w", err)
	}
	return token, exp, nil
}

// VerifierConfig configures a Verifier. Zero fields take the defaults; at
// least one of HMACSecret and PublicKeys is required.
type VerifierConfig struct {
	// HMACSecret verifies HS256 tokens (Parley's own). At least
	// MinSecretBytes when set.
	HMACSecret []byte
	// PublicKeys verify RS256 (*rsa.PublicKey, 2048 bits or more) and EdDSA
	// (ed25519.PublicKey) tokens from an external identity provider, chosen
	// by the token's kid header.
	PublicKeys map[string]crypto.PublicKey
	// Issuer is the required iss; default DefaultIssuer.
	Issuer string
	// Audience is required among aud; default DefaultAudience.
	Audience string
	// Leeway allows for clock skew on exp, nbf and iat; default
	// DefaultLeeway (30s). Negative means none.
	Leeway time.Duration
	// MaxTokenBytes refuses longer tokens before parsing; default
	// DefaultMaxTokenBytes (4096).
	MaxTokenBytes int
}

// Verifier checks access tokens. Safe for concurrent use.
type Verifier struct {
	secret   []byte
	keys     map[string]crypto.PublicKey
	maxBytes int
	parser   *jwt.Parser
}

// NewVerifier checks cfg and returns a Verifier.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if len(cfg.HMACSecret) == 0 && len(cfg.PublicKeys) == 0 {
		return nil, errors.New("auth: verifier needs an HMAC secret or public keys")
	}
	if len(cfg.HMACSecret) > 0 && len(cfg.HMACSecret) < MinSecretBytes {
		return nil, fmt.Errorf("auth: verifier secret must be at least %d bytes, got %d", MinSecretBytes, len(cfg.HMACSecret))
	}
	keys := make(map[string]crypto.PublicKey, len(cfg.PublicKeys))
	methods := []string{}
	if len(cfg.HMACSecret) > 0 {
		methods = append(methods, jwt.SigningMethodHS256.Alg())
	}
	var hasRSA, hasEd bool
	for kid, k := range cfg.PublicKeys {
		if kid == "" {
			return nil, errors.New("auth: public key with empty kid")
		}
		if err := checkPublicKey(k); err != nil {
			return nil, fmt.Errorf("auth: public key %q: %w", kid, err)
		}
		switch k.(type) {
		case *rsa.PublicKey:
			hasRSA = true
		case ed25519.PublicKey:
			hasEd = true
		}
		keys[kid] = k
	}
	if hasRSA {
		methods = append(methods, jwt.SigningMethodRS256.Alg())
	}
	if hasEd {
		methods = append(methods, jwt.SigningMethodEdDSA.Alg())
	}
	leeway := cfg.Leeway
	switch {
	case leeway == 0:
		leeway = DefaultLeeway
	case leeway < 0:
		leeway = 0
	}
	v := &Verifier{
		secret:   append([]byte(nil), cfg.HMACSecret...),
		keys:     keys,
		maxBytes: cfg.MaxTokenBytes,
	}
	if v.maxBytes <= 0 {
		v.maxBytes = DefaultMaxTokenBytes
	}
	v.parser = jwt.NewParser(
		// The allow-list is the first line of defence against alg
		// confusion: "none", HS384, PS256, ES256... never reach the keyfunc.
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithIssuer(orDefault(cfg.Issuer, DefaultIssuer)),
		jwt.WithAudience(orDefault(cfg.Audience, DefaultAudience)),
		jwt.WithLeeway(leeway),
	)
	return v, nil
}

func checkPublicKey(k crypto.PublicKey) error {
	switch k := k.(type) {
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return errors.New("nil RSA key")
		}
		if k.N.BitLen() < minRSABits {
			return fmt.Errorf("RSA key of %d bits; need at least %d", k.N.BitLen(), minRSABits)
		}
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("Ed25519 key of %d bytes", len(k))
		}
	default:
		return fmt.Errorf("unsupported key type %T (want *rsa.PublicKey or ed25519.PublicKey)", k)
	}
	return nil
}

// Verify checks token's signature and claims. Its errors wrap
// ErrTokenRequired, ErrTokenInvalid or ErrTokenExpired; the wrapped cause
// never contains the token.
func (v *Verifier) Verify(token string) (Claims, error) {
	if token == "" {
		return Claims{}, ErrTokenRequired
	}
	if len(token) > v.maxBytes {
		return Claims{}, fmt.Errorf("%w: longer than %d bytes", ErrTokenInvalid, v.maxBytes)
	}
	var c claims
	if _, err := v.parser.ParseWithClaims(token, &c, v.key); err != nil {
		if expiredOnly(err) {
			return Claims{}, fmt.Errorf("%w: %w", ErrTokenExpired, err)
		}
		return Claims{}, fmt.Errorf("%w: %w", ErrTokenInvalid, err)
	}
	if c.Subject == "" {
		return Claims{}, fmt.Errorf("%w: no subject", ErrTokenInvalid)
	}
	role, _ := ParseRole(c.Role) // absent or foreign role claims are zero
	return Claims{Subject: c.Subject, Role: role, ExpiresAt: c.ExpiresAt.Time}, nil
}

// key picks the one key a token may be checked against, from its alg: the
// secret for HS256, and for RS256/EdDSA the public key named by kid whose
// type matches the alg. An HS256 token never meets a public key (the
// classic confusion where a public key is used as an HMAC secret), and a
// signed token never meets the wrong kind of public key.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	switch t.Method.Alg() {
	case jwt.SigningMethodHS256.Alg():
		if len(v.secret) == 0 {
			return nil, errors.New("HS256 not accepted")
		}
		return v.secret, nil
	case jwt.SigningMethodRS256.Alg(), jwt.SigningMethodEdDSA.Alg():
		kid, _ := t.Header["kid"].(string)
		k, ok := v.keys[kid]
		if !ok {
			return nil, errors.New("unknown kid")
		}
		switch k.(type) {
		case *rsa.PublicKey:
			if t.Method.Alg() == jwt.SigningMethodRS256.Alg() {
				return k, nil
			}
		case ed25519.PublicKey:
			if t.Method.Alg() == jwt.SigningMethodEdDSA.Alg() {
				return k, nil
			}
		}
		return nil, errors.New("kid names a key of another algorithm")
	}
	return nil, fmt.Errorf("algorithm %q not accepted", t.Method.Alg())
}

// expiredOnly reports whether the only thing wrong with a correctly signed
// token is its age, so that a client is told to refresh rather than that
// its token is bad.
func expiredOnly(err error) bool {
	if !errors.Is(err, jwt.ErrTokenExpired) {
		return false
	}
	for _, other := range []error{
		jwt.ErrTokenSignatureInvalid, jwt.ErrTokenMalformed, jwt.ErrTokenUnverifiable,
		jwt.ErrTokenInvalidIssuer, jwt.ErrTokenInvalidAudience, jwt.ErrTokenNotValidYet,
		jwt.ErrTokenUsedBeforeIssued, jwt.ErrTokenRequiredClaimMissing,
	} {
		if errors.Is(err, other) {
			return false
		}
	}
	return true
}

func randomID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("auth: random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
